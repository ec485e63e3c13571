//! Advice on a config that loads: settings that are valid together but probably not what the
//! operator meant. `roost -t` prints them as warnings (it still exits 0); nothing else changes
//! behaviour because of them.

use super::Config;
use std::time::Duration;

/// One warning per finding, naming the keys involved.
pub fn warnings(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let server = &config.server;
    // A stop or upgrade gives requests in flight the grace period, then the shutdown timeout;
    // a slower request (a synchronous WPS Execute) is cut off.
    let drain =
        Duration::from_secs(server.grace_period_seconds + server.graceful_shutdown_timeout_seconds);
    for (i, s) in config.services.iter().enumerate() {
        let read = s.timeouts.upstream_read;
        if read > drain {
            out.push(format!(
                "services[{i}] ({}): timeouts.upstream_read ({} s) is longer than \
                 server.grace_period_seconds + server.graceful_shutdown_timeout_seconds ({} s): \
                 a stop or hot upgrade cuts off a request that takes longer than that (the grace \
                 period is only waited for while requests are in flight)",
                s.name,
                read.as_secs(),
                drain.as_secs()
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(server: &str, timeouts: &str) -> Config {
        let yaml = format!(
            "server:\n{server}services:\n  - name: fp\n    listen: 127.0.0.1:1\n    backends: [127.0.0.1:2]\n{timeouts}"
        );
        Config::from_yaml(&yaml, "t.yaml").unwrap()
    }

    #[test]
    fn an_upstream_read_longer_than_the_drain_is_named() {
        let c = load(
            "  grace_period_seconds: 30\n  graceful_shutdown_timeout_seconds: 10\n",
            "    timeouts: { upstream_read: 300s }\n",
        );
        let w = warnings(&c);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("services[0] (fp): timeouts.upstream_read (300 s)"),
            "{w:?}"
        );
        assert!(w[0].contains("(40 s)"), "{w:?}");
        let fits = load(
            "  grace_period_seconds: 300\n  graceful_shutdown_timeout_seconds: 10\n",
            "    timeouts: { upstream_read: 300s }\n",
        );
        assert!(warnings(&fits).is_empty());
    }
}
