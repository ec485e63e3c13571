//! Configuration errors. Each one names the file, the line (when known) and the key path, so an
//! operator can fix every problem in one pass instead of one restart per typo.

use std::fmt;

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file as the operator named it (or a label such as `<string>` in tests).
    pub file: String,
    /// 1-based line of the offending key, when it could be located.
    pub line: Option<usize>,
    /// Key path such as `services[1].backends[0].weight`; `None` for whole-file problems.
    pub key: Option<String>,
    /// What is wrong and, where possible, what to write instead.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in one file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// True when some error's key path equals `key` and its message contains `needle`.
    /// Meant for tests and for callers that react to one specific problem.
    pub fn has(&self, key: &str, needle: &str) -> bool {
        self.0
            .iter()
            .any(|e| e.key.as_deref() == Some(key) && e.message.contains(needle))
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
