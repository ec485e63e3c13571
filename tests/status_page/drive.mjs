// The status page in a real browser (Chromium driven by Playwright), run by
// tests/status_page.rs, which starts Roost and its backends, sends the traffic and checks what
// this prints (one JSON line) against /status and /history.
//
// Environment: PAGE_URL (the admin listener's /), TOKEN, SERVICE, KEY (to look up),
// DRAIN (the backend `ip:port` whose drain button to press), SHOT and PHONE_SHOT (screenshot
// paths), CHROMIUM (the browser binary), TIMEOUT_MS (for each wait).
import { chromium } from "playwright-core";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`drive.mjs: ${name} is not set`);
  return v;
};
const url = env("PAGE_URL");
const timeout = Number(process.env.TIMEOUT_MS || "60000");
const result = {};

const browser = await chromium.launch({
  executablePath: env("CHROMIUM"),
  // Without the background-networking flags Chromium keeps trying Google's hosts, which this
  // closed network refuses.
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
  ],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.setDefaultTimeout(timeout);
  const consoleErrors = [];
  page.on("pageerror", (e) => consoleErrors.push(String(e)));

  // Without the token the protected listener answers 401, and the page says so.
  await page.goto(url);
  await page.waitForFunction(() => document.getElementById("error").textContent.includes("401"));
  result.without_token_error = await page.textContent("#error");
  result.buttons_without_token = await page.locator("button[data-action]").count();

  // The token entered on the page: the tables and the operator buttons appear.
  await page.fill("#token", env("TOKEN"));
  await page.click("#auth button[type=submit]");
  const row = (addr) => page.locator(`tr[data-backend="${addr}"]`);
  await row(env("DRAIN")).locator("button[data-action=drain]").waitFor();
  result.buttons_with_token = await page.locator("button[data-action]").count();

  // Route lookup.
  await page.selectOption("#route-service", env("SERVICE"));
  await page.fill("#route-key", env("KEY"));
  await page.click("#route-form button[type=submit]");
  await page.locator('#route-result dd[data-field="backend"]').waitFor();
  result.route = {};
  for (const dd of await page.locator("#route-result dd").all()) {
    result.route[await dd.getAttribute("data-field")] = await dd.textContent();
  }

  // Charts drawn from the history: at least two points on every backend's two charts.
  await page.waitForFunction(() => {
    const svgs = [...document.querySelectorAll("td.rps svg, td.p99 svg")];
    return svgs.length > 0 && svgs.every((s) => Number(s.dataset.points) >= 2);
  });
  result.charts = await page.$$eval("tr[data-backend]", (rows) => rows.map((r) => {
    const segments = (sel) => {
      const d = r.querySelector(sel + " path")?.getAttribute("d") || "";
      return (d.match(/[ML]/g) || []).length;
    };
    return {
      backend: r.dataset.backend,
      rps_segments: segments("td.rps"),
      p99_segments: segments("td.p99"),
      rps_text: r.querySelector("td.rps span").textContent,
      p99_text: r.querySelector("td.p99 span").textContent,
    };
  }));

  // Drain with the button: the row's state follows.
  const target = row(env("DRAIN"));
  result.state_before = await target.getAttribute("data-state");
  await target.locator("button[data-action=drain]").click();
  await page.waitForFunction(
    (addr) => document.querySelector(`tr[data-backend="${addr}"]`)?.dataset.state === "drain",
    env("DRAIN"),
  );
  result.state_after = await target.getAttribute("data-state");
  result.drain_disabled = await target.locator("button[data-action=drain]").isDisabled();
  // The change is in the recent events, with its reason.
  await page.waitForFunction(() =>
    [...document.querySelectorAll(".events li[data-kind=state]")]
      .some((li) => li.textContent.includes("ready -> drain (operator)")));
  result.events = await page.$$eval(".events li[data-kind]", (lis) => lis.map((li) => li.textContent));

  await page.screenshot({ path: env("SHOT"), fullPage: true });

  // A phone: nothing wider than the screen.
  await page.setViewportSize({ width: 390, height: 844 });
  result.phone_overflow = await page.evaluate(
    () => document.documentElement.scrollWidth - window.innerWidth,
  );
  await page.screenshot({ path: env("PHONE_SHOT"), fullPage: true });
  result.page_errors = consoleErrors;
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
