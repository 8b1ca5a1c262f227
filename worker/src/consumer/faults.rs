//! Fault injection for the reliability tests and chaos runs, off unless
//! `TRAINYARD_FAULTS` is set. Comma-separated directives:
//! - `slow-ms=N`: every training takes at least N ms longer (to kill or stop
//!   a worker mid-training deterministically);
//! - `panic-org=UUID`: training for that organization panics;
//! - `abort-org=UUID`: the process aborts while training that organization.
//!
//! Production never sets it; the worker logs a warning at start when it is set.

use std::time::Duration;

use trainyard_shared::OrgId;

#[derive(Debug, Clone, Default)]
pub struct Faults {
    pub slow: Option<Duration>,
    pub panic_org: Option<OrgId>,
    pub abort_org: Option<OrgId>,
}

impl Faults {
    pub fn from_env() -> Self {
        std::env::var("TRAINYARD_FAULTS")
            .map(|s| Self::parse(&s))
            .unwrap_or_default()
    }

    pub fn parse(spec: &str) -> Self {
        let mut f = Faults::default();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            match key {
                "slow-ms" => f.slow = value.parse().ok().map(Duration::from_millis),
                "panic-org" => f.panic_org = value.parse().ok(),
                "abort-org" => f.abort_org = value.parse().ok(),
                _ => {
                    tracing::warn!(directive = %part, "unknown TRAINYARD_FAULTS directive ignored")
                }
            }
        }
        f
    }

    pub fn is_set(&self) -> bool {
        self.slow.is_some() || self.panic_org.is_some() || self.abort_org.is_some()
    }

    /// Runs inside the blocking training task.
    pub fn inject(&self, org: OrgId) {
        if let Some(d) = self.slow {
            std::thread::sleep(d);
        }
        if self.panic_org == Some(org) {
            panic!("injected fault: training panics for organization {org}");
        }
        if self.abort_org == Some(org) {
            eprintln!("injected fault: aborting the process while training organization {org}");
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_directives_parse_and_unknown_ones_are_ignored() {
        let org = OrgId::new_random();
        let f = Faults::parse(&format!("slow-ms=250, panic-org={org},bogus=1"));
        assert_eq!(f.slow, Some(Duration::from_millis(250)));
        assert_eq!(f.panic_org, Some(org));
        assert!(f.abort_org.is_none());
        assert!(!Faults::parse("").is_set());
    }
}
