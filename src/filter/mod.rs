//! Sysmon config rules for NetworkConnect: which connections are reported, and
//! the RuleName they carry; for DnsQuery (`<DnsQuery>`, event 22); and for
//! sockscope's lifecycle events, under their own element names
//! `<ConnectionFailed>` (252) and `<ConnectionClosed>` (253). Each event type
//! has its own fields (`field::EventType::fields`); a rule naming a field of
//! another event type is refused.
//!
//! The semantics are Sysmon's (SysmonCommon `rules.c` and `xml.cpp`, as used by
//! microsoft/SysmonForLinux); where sockscope differs on purpose, the code says so.

pub mod condition;
mod dom;
pub mod field;
pub mod kernel;
mod rules;
pub mod sysmon_config;

use std::path::Path;

pub use sysmon_config::ConfigError;

use crate::event::{DnsQuery, LifecycleEvent, NetworkConnect, CONNECTION_FAILED};
use rules::{FieldValues, Filter, OnMatch};

/// What to do with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<'r> {
    /// Report it, with this RuleName (`None`: no named rule matched; written `-`).
    Report {
        rule_name: Option<&'r str>,
    },
    Drop,
}

/// The NetworkConnect rules of one config (or none: report everything).
#[derive(Debug)]
pub struct RuleSet {
    policy: Policy,
    /// `<DnsQuery>` filters: the same semantics, on DnsQuery's fields.
    dns_policy: Policy,
    /// `<ConnectionFailed>` filters; None: failures follow the NetworkConnect rules.
    failed: Option<Policy>,
    /// `<ConnectionClosed>` filters; None: a close is reported whenever its
    /// connection's event 3 was.
    closed: Option<Policy>,
    source: Option<ConfigSource>,
}

#[derive(Debug)]
enum Policy {
    ReportAll,
    Filters {
        /// `onmatch="exclude"` filters: a match drops the event.
        excludes: Vec<Filter>,
        /// `onmatch="include"` filters, last in the config first: Sysmon fills its
        /// list from the back (`BackwardFillEventList`), so when several include
        /// filters match, the RuleName comes from the one written last.
        includes_last_first: Vec<Filter>,
    },
}

#[derive(Debug)]
struct ConfigSource {
    name: String,
    bytes: Vec<u8>,
    schema_version: String,
}

impl RuleSet {
    /// No config: every connection is reported. (Sysmon itself logs no
    /// NetworkConnect without a config that enables it; sockscope exists to
    /// report connections, so without `-c` it reports them all.)
    pub fn allow_all() -> RuleSet {
        RuleSet { policy: Policy::ReportAll, dns_policy: Policy::ReportAll, failed: None, closed: None, source: None }
    }

    /// Reads a Sysmon config file. Also returns notices to log: parts of the
    /// config that were ignored or look like mistakes.
    pub fn from_file(path: impl AsRef<Path>) -> Result<(RuleSet, Vec<String>), ConfigError> {
        let path = path.as_ref();
        let bytes = sysmon_config::read_bounded(path)?;
        RuleSet::from_bytes(bytes, &path.display().to_string())
    }

    /// Reads a config held in memory; `name_for_errors` names it in errors and notices.
    #[cfg(test)]
    pub fn from_str(text: &str, name_for_errors: &str) -> Result<(RuleSet, Vec<String>), ConfigError> {
        RuleSet::from_bytes(text.as_bytes().to_vec(), name_for_errors)
    }

    fn from_bytes(bytes: Vec<u8>, name: &str) -> Result<(RuleSet, Vec<String>), ConfigError> {
        let parsed = sysmon_config::parse_bytes(&bytes, name)?;
        let own = |filters: Vec<Filter>| (!filters.is_empty()).then(|| Policy::from_filters(filters));
        let failed = own(parsed.failed_filters);
        let closed = own(parsed.closed_filters);
        let source = ConfigSource { name: name.to_string(), bytes, schema_version: parsed.schema_version };
        Ok((
            RuleSet {
                policy: Policy::from_filters(parsed.filters),
                dns_policy: Policy::from_filters(parsed.dns_filters),
                failed,
                closed,
                source: Some(source),
            },
            parsed.notices,
        ))
    }

    /// Sysmon's decision for one event (SysmonCommon `rules.c`, `FilterEventRules`).
    pub fn evaluate(&self, event: &NetworkConnect) -> Verdict<'_> {
        self.policy.decide(FieldValues::new(event))
    }

    /// Sysmon's decision for one DnsQuery, as [`RuleSet::evaluate`] for
    /// NetworkConnect: with a config, no `<DnsQuery>` filter means none is
    /// reported (Sysmon's default for an event type without rules).
    pub fn evaluate_dns(&self, event: &DnsQuery) -> Verdict<'_> {
        self.dns_policy.decide(FieldValues::dns(event))
    }

    /// The decision for a lifecycle event: by its own filters, else a failure
    /// as NetworkConnect's rules would decide the connection, and a close
    /// as its event 3 was (the caller reports closes of reported
    /// connections only: Report, and the caller keeps event 3's RuleName).
    pub fn evaluate_lifecycle(&self, event: &LifecycleEvent) -> Verdict<'_> {
        let values = FieldValues::with_extras(&event.connect, &event.extras);
        if event.connect.event_id == CONNECTION_FAILED {
            self.failed.as_ref().unwrap_or(&self.policy).decide(values)
        } else {
            match &self.closed {
                Some(policy) => policy.decide(values),
                None => Verdict::Report { rule_name: None },
            }
        }
    }

    /// Whether the config has `<ConnectionClosed>` filters of its own.
    pub fn has_closed_rules(&self) -> bool {
        self.closed.is_some()
    }
}

impl Policy {
    fn from_filters(filters: Vec<Filter>) -> Policy {
        let (excludes, mut includes_last_first): (Vec<Filter>, Vec<Filter>) =
            filters.into_iter().partition(|filter| filter.on_match == OnMatch::Exclude);
        includes_last_first.reverse();
        Policy::Filters { excludes, includes_last_first }
    }

    /// Sysmon's decision for one event (SysmonCommon `rules.c`, `FilterEventRules`).
    fn decide(&self, mut values: FieldValues<'_>) -> Verdict<'_> {
        let (excludes, includes) = match self {
            Policy::ReportAll => return Verdict::Report { rule_name: None },
            Policy::Filters { excludes, includes_last_first } => (excludes, includes_last_first),
        };
        // A config without NetworkConnect filters leaves the event type at its
        // default, which is off: the manifest gives NetworkConnect no
        // `ruledefault`, and SysmonCommon `manifest.tt` makes that `Rule_exclude`;
        // `FilterEventRules` then returns that default ("Return type default on no
        // rule"), and SysmonForLinux `sysmonforlinux.c` (`SetActiveSyscalls`) does
        // not even enable the network probes.
        if excludes.is_empty() && includes.is_empty() {
            return Verdict::Drop;
        }
        // Exclude filters come first, so they win over include filters.
        if excludes.iter().any(|filter| filter.evaluate(&mut values).is_some()) {
            return Verdict::Drop;
        }
        for filter in includes {
            if let Some(rule_name) = filter.evaluate(&mut values) {
                return Verdict::Report { rule_name };
            }
        }
        // Nothing matched. A lone filter decides by its own default: everything
        // but the matches for onmatch="exclude", only the matches for include. With
        // several filters (of any kind) Sysmon drops the event — even when they are
        // all exclude filters ("If no match and multiple rules, default to exclude").
        if excludes.len() == 1 && includes.is_empty() {
            Verdict::Report { rule_name: None }
        } else {
            Verdict::Drop
        }
    }
}

impl RuleSet {
    /// What the kernel can drop by itself with the same answer (see kernel.rs).
    /// None when `<ConnectionFailed>` has filters of its own: a connect the
    /// kernel drops could not be reported as a failure either.
    pub fn kernel_exclusions(&self) -> kernel::KernelExclusions {
        if self.failed.is_some() {
            return Default::default();
        }
        match &self.policy {
            Policy::ReportAll => Default::default(),
            Policy::Filters { excludes, .. } => kernel::kernel_exclusions(excludes),
        }
    }

    /// Whether any event at all can be reported; `false` means the config turns
    /// NetworkConnect off (what Sysmon's `IdHasIncludeRules` approximates).
    pub fn may_report(&self) -> bool {
        match &self.policy {
            Policy::ReportAll => true,
            Policy::Filters { excludes, includes_last_first } => {
                (excludes.len() == 1 && includes_last_first.is_empty())
                    || includes_last_first.iter().any(|filter| !filter.items.is_empty())
            }
        }
    }

    /// The name the config was loaded under (its path for `from_file`).
    pub fn config_name(&self) -> Option<&str> {
        self.source.as_ref().map(|source| source.name.as_str())
    }

    /// The config file's bytes, as read: what Sysmon hashes for the
    /// configuration-change event (Event ID 16, `SHA256=` of the file).
    pub fn config_bytes(&self) -> Option<&[u8]> {
        self.source.as_ref().map(|source| source.bytes.as_slice())
    }

    /// The `schemaversion` of the config's `<Sysmon>` element.
    pub fn schema_version(&self) -> Option<&str> {
        self.source.as_ref().map(|source| source.schema_version.as_str())
    }
}

#[cfg(test)]
mod tests;
