//! `roost import-nginx PATH [-o FILE] [--allow-approximate]`: read an `nginx.conf` (and what it
//! includes) and write the Roost config that does the same, with comments naming the NGINX
//! directive behind each value and listing what was approximated or ignored. Approximations
//! (where a request goes may differ from NGINX) make the command refuse to write unless
//! `--allow-approximate` is given.
//!
//! `parse` reads nginx.conf syntax, `translate` maps directives onto services (`upstream`:
//! backends and hashing; `settings`: timeouts, limits, headers), `values` converts argument forms; this module writes the YAML and runs the command.

pub mod parse;
pub mod settings;
pub mod translate;
pub mod upstream;
pub mod values;

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use translate::{Translation, Value};

/// The Roost YAML for `t`, read from `source`.
pub fn emit(t: &Translation, source: &str) -> String {
    let mut y = String::new();
    let _ = writeln!(
        y,
        "# Roost configuration imported from NGINX ({source}) by `roost import-nginx`."
    );
    y.push_str(
        "# Each value names the NGINX directive it came from. Settings NGINX did not write take\n\
         # Roost's defaults, which differ from NGINX's (e.g. proxy_read_timeout 60s there, 300s\n\
         # here; client_max_body_size 1m there, 512MiB here). ${VAR} placeholders are expanded\n\
         # by Roost when it loads this file.\n",
    );
    list(
        &mut y,
        "Approximated (where a request goes may differ from NGINX)",
        &t.report.approximated,
    );
    list(
        &mut y,
        "Ignored (no effect on where a request goes)",
        &t.report.ignored,
    );
    if let Some(k) = &t.keepalive {
        y.push_str("server:\n");
        line(&mut y, 2, "upstream_keepalive_pool_size", k);
    }
    if t.services.is_empty() {
        y.push_str("services: []\n");
        return y;
    }
    y.push_str("services:\n");
    for s in &t.services {
        let _ = writeln!(y, "  # from {}", s.from);
        for note in &s.notes {
            let _ = writeln!(y, "  # {note}");
        }
        let _ = writeln!(y, "  - name: {}", values::quote(&s.name));
        if let Some(l) = &s.listen {
            line(&mut y, 4, "listen", l);
        }
        section(&mut y, "hash", &s.hash);
        y.push_str("    backends:\n");
        for b in &s.backends {
            let _ = writeln!(y, "      - {}   # {}", b.yaml, one_line(&b.from));
        }
        section(&mut y, "limits", &s.limits);
        section(&mut y, "timeouts", &s.timeouts);
    }
    y
}

fn list(y: &mut String, title: &str, items: &[String]) {
    let _ = writeln!(
        y,
        "#\n# {title}: {}",
        if items.is_empty() { "none" } else { "" }
    );
    for item in items {
        let _ = writeln!(y, "#   - {}", one_line(item));
    }
}

fn section(y: &mut String, name: &str, entries: &[(&str, Value)]) {
    if entries.is_empty() {
        return;
    }
    let _ = writeln!(y, "    {name}:");
    for (key, v) in entries {
        line(y, 6, key, v);
    }
}

fn line(y: &mut String, indent: usize, key: &str, v: &Value) {
    let _ = writeln!(
        y,
        "{:indent$}{key}: {}   # {}",
        "",
        v.yaml,
        one_line(&v.from)
    );
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// Run the command; see the module docs for what the exit codes mean.
pub fn run(path: &Path, output: Option<&Path>, allow_approximate: bool) -> ExitCode {
    let directives = match parse::parse_file(path) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("roost import-nginx: {e}");
            return ExitCode::from(2);
        }
    };
    let t = translate::translate(&directives);
    let yaml = emit(&t, &path.display().to_string());
    if !t.report.approximated.is_empty() {
        eprintln!(
            "roost import-nginx: {} directive{} without an exact Roost equivalent:",
            t.report.approximated.len(),
            if t.report.approximated.len() == 1 {
                ""
            } else {
                "s"
            }
        );
        for a in &t.report.approximated {
            eprintln!("  - {a}");
        }
        if !allow_approximate {
            eprintln!(
                "roost import-nginx: nothing written; re-run with --allow-approximate to write the \
                 config anyway (the list is repeated at its top)"
            );
            return ExitCode::FAILURE;
        }
    }
    let name = output.map_or("(stdout)".to_string(), |o| o.display().to_string());
    // The output must load: check it as `roost -t` would (DNS names and ${VAR}s of the target
    // site may not resolve here, so a failure is reported, not fatal).
    if let Err(errors) = crate::config::Config::from_yaml(&yaml, &name) {
        eprintln!("roost import-nginx: note: `roost -t` on this machine would say:\n{errors}");
    }
    match output {
        Some(o) => {
            if let Err(e) = std::fs::write(o, &yaml) {
                eprintln!("roost import-nginx: cannot write {}: {e}", o.display());
                return ExitCode::from(2);
            }
            eprintln!(
                "roost import-nginx: wrote {name}: {} service{}",
                t.services.len(),
                if t.services.len() == 1 { "" } else { "s" }
            );
        }
        None => print!("{yaml}"),
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests;
