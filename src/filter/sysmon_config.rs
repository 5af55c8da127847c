//! Reads a Sysmon config (the XML given to `sysmon -c`) into NetworkConnect filters.
//!
//! Accepted shapes, as SysmonCommon `xml.cpp` (`ApplyConfigurationFile`) reads
//! them: `<Sysmon schemaversion=..>` holding settings and `<EventFiltering>`;
//! event filters either directly in `<EventFiltering>` or each in a
//! `<RuleGroup name=.. groupRelation=and|or>`; inside a filter, conditions named
//! after event fields and `<Rule name=.. groupRelation=..>` groups of them. Filters
//! for other event types are accepted and reported as ignored.
//!
//! Sysmon finds filters anywhere below `<EventFiltering>` and skips whatever it
//! does not know; here an element in a place where it means nothing is an error,
//! so that a typo (`<NetworkConect>`) does not silently change what is reported.

use std::fmt;
use std::path::PathBuf;

use super::condition::{Condition, Operator, MAX_RULE_NAME_CHARS};
use super::dom::{self, Element};
use super::field::{EventType, Field};
use super::rules::{Filter, Item, OnMatch, Relation, Rule};

/// Event types Sysmon filters on (the `rulename`s of SysmonCommon
/// `manifest.xml`, plus the Windows-only ones of later Sysmon versions).
const SYSMON_EVENT_TYPES: &[&str] = &[
    "ProcessCreate",
    "FileCreateTime",
    "NetworkConnect",
    "ProcessTerminate",
    "DriverLoad",
    "ImageLoad",
    "CreateRemoteThread",
    "RawAccessRead",
    "ProcessAccess",
    "FileCreate",
    "RegistryEvent",
    "FileCreateStreamHash",
    "PipeEvent",
    "WmiEvent",
    "DnsQuery",
    "FileDelete",
    "ClipboardChange",
    "ProcessTampering",
    "FileDeleteDetected",
    "FileBlockExecutable",
    "FileBlockShredding",
    "FileExecutableDetected",
    "eBPFEvent",
];

/// sockscope's own event types a config may filter (events 252 and 253),
/// with the same rules and NetworkConnect's fields plus their own.
const SOCKSCOPE_EVENT_TYPES: &[&str] = &["ConnectionFailed", "ConnectionClosed"];

fn known_event_type(name: &str) -> bool {
    SYSMON_EVENT_TYPES.contains(&name) || SOCKSCOPE_EVENT_TYPES.contains(&name)
}

/// Schema versions up to 4.1 combine a filter's conditions with OR by default,
/// later ones with AND (`xml.cpp`: `TO_DOUBLE( version ) > 4.1`; SysmonCommon
/// `UnitTests/rules.cpp`, "Check 4.21 configuration default to AND groups").
const LAST_SCHEMA_DEFAULTING_TO_OR: u64 = 410;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read Sysmon config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Sysmon config {}: {problem}", path.display())]
    Refused { path: PathBuf, problem: String },
    #[error("{file}:{line}:{column}: {problem}")]
    Invalid {
        file: String,
        line: usize,
        column: usize,
        // Boxed to keep every Result that carries this error small.
        problem: Box<Problem>,
    },
}

impl ConfigError {
    /// 1-based line and column (in characters) of the problem, when it has one.
    #[cfg(test)]
    pub fn location(&self) -> Option<(usize, usize)> {
        match self {
            ConfigError::Read { .. } | ConfigError::Refused { .. } => None,
            ConfigError::Invalid { line, column, .. } => Some((*line, *column)),
        }
    }

    #[cfg(test)]
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            ConfigError::Read { .. } | ConfigError::Refused { .. } => None,
            ConfigError::Invalid { problem, .. } => Some(problem),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("not a UTF-8 text file: {0}")]
    Encoding(String),
    #[error("malformed XML: {0}")]
    MalformedXml(String),
    #[error("the root element is <{0}>; a Sysmon config starts with <Sysmon schemaversion=\"...\">")]
    WrongRoot(String),
    #[error("<{element}> needs the attribute `{attribute}`")]
    MissingAttribute { element: String, attribute: &'static str },
    #[error("unexpected element <{element}> in <{parent}>; expected {expected}{}", hint(.suggestion))]
    UnexpectedElement { element: String, parent: String, expected: &'static str, suggestion: Option<String> },
    #[error("unknown field `{name}` in <{event}>{}", hint(.suggestion))]
    UnknownField { name: String, event: &'static str, suggestion: Option<String> },
    #[error("unknown condition `{0}`; the conditions are: {names}", names = condition_names())]
    UnknownCondition(String),
    #[error("bad value: {0}")]
    BadValue(String),
}

fn hint(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(name) => format!(" (did you mean {name}? names are case-sensitive)"),
        None => String::new(),
    }
}

fn condition_names() -> String {
    Operator::ALL.iter().map(|op| op.name()).collect::<Vec<_>>().join(", ")
}

/// The largest config file read (a large real one, every Sysmon rule set
/// merged, is under 1 MiB): a bound on the memory a reload can cost.
pub const MAX_CONFIG_BYTES: u64 = 8 << 20;

/// Reads a config file: a regular file (a FIFO, device or directory is
/// refused without reading it; opening never blocks) of at most
/// MAX_CONFIG_BYTES.
pub(super) fn read_bounded(path: &std::path::Path) -> Result<Vec<u8>, ConfigError> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let read_error = |source| ConfigError::Read { path: path.to_path_buf(), source };
    let refused = |problem: String| ConfigError::Refused { path: path.to_path_buf(), problem };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .map_err(read_error)?;
    let meta = file.metadata().map_err(read_error)?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a file"
        };
        return Err(refused(format!("{what}; a config must be a regular file")));
    }
    let too_large = || refused(format!("larger than {} MiB; refused", MAX_CONFIG_BYTES >> 20));
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // The size can change while it is read: never more than the bound.
    file.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes).map_err(read_error)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(too_large());
    }
    Ok(bytes)
}

/// What a config says about NetworkConnect.
#[derive(Debug)]
pub(super) struct ParsedConfig {
    /// NetworkConnect's, in document order.
    pub filters: Vec<Filter>,
    /// `<DnsQuery>` filters, in document order.
    pub dns_filters: Vec<Filter>,
    /// `<ConnectionFailed>`'s (event 252), in document order.
    pub failed_filters: Vec<Filter>,
    /// `<ConnectionClosed>`'s (event 253), in document order.
    pub closed_filters: Vec<Filter>,
    pub schema_version: String,
    /// Things ignored or suspicious, for the caller to log.
    pub notices: Vec<String>,
}

/// Parses a config held in `bytes`; `file` names it in errors and notices.
pub(super) fn parse_bytes(bytes: &[u8], file: &str) -> Result<ParsedConfig, ConfigError> {
    if bytes.starts_with(&[0xff, 0xfe]) || bytes.starts_with(&[0xfe, 0xff]) || bytes.iter().take(4).any(|&b| b == 0) {
        return Err(invalid(
            file,
            "",
            0,
            Problem::Encoding("it looks like UTF-16; convert it, e.g. `iconv -f UTF-16 -t UTF-8`".to_string()),
        ));
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => parse_str(text, file),
        Err(error) => {
            let valid = &bytes[..error.valid_up_to()];
            // The prefix is valid UTF-8 by definition; an empty one is the fallback.
            let prefix = std::str::from_utf8(valid).unwrap_or_default();
            Err(invalid(
                file,
                prefix,
                prefix.len(),
                Problem::Encoding(format!("byte 0x{:02x} is not valid UTF-8", bytes[error.valid_up_to()])),
            ))
        }
    }
}

/// Parses a config held in `text`; `file` names it in errors and notices.
fn parse_str(text: &str, file: &str) -> Result<ParsedConfig, ConfigError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let root = dom::parse_document(text)
        .map_err(|error| invalid(file, text, error.offset, Problem::MalformedXml(error.message)))?;
    let mut reader = ConfigReader {
        file,
        source: text,
        default_relation: Relation::And,
        filters: Vec::new(),
        dns_filters: Vec::new(),
        failed_filters: Vec::new(),
        closed_filters: Vec::new(),
        notices: Vec::new(),
        ignored: Vec::new(),
    };
    let schema_version = reader.read_root(&root)?;
    reader.finish_notices();
    Ok(ParsedConfig {
        filters: reader.filters,
        dns_filters: reader.dns_filters,
        failed_filters: reader.failed_filters,
        closed_filters: reader.closed_filters,
        schema_version,
        notices: reader.notices,
    })
}

fn invalid(file: &str, source: &str, offset: usize, problem: Problem) -> ConfigError {
    let (line, column) = line_column(source, offset);
    ConfigError::Invalid { file: file.to_string(), line, column, problem: Box::new(problem) }
}

/// 1-based line and column (counted in characters) of a byte offset.
fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(source.len());
    while !source.is_char_boundary(end) {
        end -= 1;
    }
    let before = &source[..end];
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    (before.matches('\n').count() + 1, before[line_start..].chars().count() + 1)
}

/// Event types whose filters were skipped: name, how many, where the first was.
struct Ignored {
    event_type: String,
    count: usize,
    first_offset: usize,
}

struct ConfigReader<'a> {
    file: &'a str,
    source: &'a str,
    default_relation: Relation,
    filters: Vec<Filter>,
    dns_filters: Vec<Filter>,
    failed_filters: Vec<Filter>,
    closed_filters: Vec<Filter>,
    notices: Vec<String>,
    ignored: Vec<Ignored>,
}

/// The `<RuleGroup>` around a filter.
#[derive(Clone, Copy)]
struct GroupContext<'e> {
    relation: Option<Relation>,
    name: Option<&'e str>,
}

impl<'a> ConfigReader<'a> {
    fn error(&self, offset: usize, problem: Problem) -> ConfigError {
        invalid(self.file, self.source, offset, problem)
    }

    fn notice(&mut self, offset: usize, message: impl fmt::Display) {
        let (line, column) = line_column(self.source, offset);
        self.notices.push(format!("{}:{line}:{column}: {message}", self.file));
    }

    fn read_root(&mut self, root: &Element) -> Result<String, ConfigError> {
        if root.name != "Sysmon" {
            return Err(self.error(root.offset, Problem::WrongRoot(root.name.clone())));
        }
        let version = root.attribute("schemaversion").ok_or_else(|| {
            self.error(
                root.offset,
                Problem::MissingAttribute { element: root.name.clone(), attribute: "schemaversion" },
            )
        })?;
        let hundredths = parse_schema_version(&version.value).ok_or_else(|| {
            self.error(
                version.offset,
                Problem::BadValue(format!(
                    "schemaversion `{}` is not a Sysmon schema version (1.0 to 4.99, like 4.90)",
                    version.value
                )),
            )
        })?;
        self.default_relation = if hundredths > LAST_SCHEMA_DEFAULTING_TO_OR { Relation::And } else { Relation::Or };

        for child in root.elements() {
            if child.name == "EventFiltering" {
                self.read_event_filtering(child)?;
            } else if child.name.eq_ignore_ascii_case("EventFiltering") {
                return Err(self.unexpected(child, root, "<EventFiltering>", Some("<EventFiltering>".to_string())));
            } else {
                self.notice(child.offset, format_args!("setting <{}> ignored: sockscope does not use it", child.name));
            }
        }
        Ok(version.value.clone())
    }

    fn unexpected(
        &self,
        element: &Element,
        parent: &Element,
        expected: &'static str,
        suggestion: Option<String>,
    ) -> ConfigError {
        self.error(
            element.offset,
            Problem::UnexpectedElement {
                element: element.name.clone(),
                parent: parent.name.clone(),
                expected,
                suggestion,
            },
        )
    }

    fn read_event_filtering(&mut self, event_filtering: &Element) -> Result<(), ConfigError> {
        for child in event_filtering.elements() {
            // Sysmon recognises the group by a case-insensitive name (`strcasecmp`).
            if child.name.eq_ignore_ascii_case("RuleGroup") {
                self.read_rule_group(child)?;
            } else if known_event_type(&child.name) {
                self.read_event_type(child, GroupContext { relation: None, name: None })?;
            } else {
                let suggestion = event_type_ignoring_case(&child.name).map(|name| format!("<{name}>"));
                let expected = "<RuleGroup> or an event type such as <NetworkConnect>";
                return Err(self.unexpected(child, event_filtering, expected, suggestion));
            }
        }
        Ok(())
    }

    fn read_rule_group(&mut self, group: &Element) -> Result<(), ConfigError> {
        let context = GroupContext { relation: self.relation_attribute(group)?, name: self.name_attribute(group)? };
        for child in group.elements() {
            if known_event_type(&child.name) {
                self.read_event_type(child, context)?;
            } else {
                let suggestion = event_type_ignoring_case(&child.name).map(|name| format!("<{name}>"));
                return Err(self.unexpected(child, group, "an event type such as <NetworkConnect>", suggestion));
            }
        }
        Ok(())
    }

    fn read_event_type(&mut self, element: &Element, group: GroupContext<'_>) -> Result<(), ConfigError> {
        if let Some(event) = EventType::from_name(&element.name) {
            let filter = self.read_filter(element, group, event)?;
            match event {
                EventType::NetworkConnect => self.filters.push(filter),
                EventType::DnsQuery => self.dns_filters.push(filter),
                EventType::ConnectionFailed => self.failed_filters.push(filter),
                EventType::ConnectionClosed => self.closed_filters.push(filter),
            }
            return Ok(());
        }
        match self.ignored.iter_mut().find(|ignored| ignored.event_type == element.name) {
            Some(ignored) => ignored.count += 1,
            None => {
                self.ignored.push(Ignored { event_type: element.name.clone(), count: 1, first_offset: element.offset })
            }
        }
        Ok(())
    }

    fn read_filter(
        &mut self,
        element: &Element,
        group: GroupContext<'_>,
        event: EventType,
    ) -> Result<Filter, ConfigError> {
        let on_match = self.on_match(element)?;
        let relation = group.relation.unwrap_or(self.default_relation);
        let mut items = Vec::new();
        for child in element.elements() {
            // `strcasecmp( currentRule.name(), "rule" )` in Sysmon.
            if child.name.eq_ignore_ascii_case("Rule") {
                if let Some(rule) = self.read_rule(child, group.name, event)? {
                    items.push(Item::Rule(rule));
                }
            } else {
                items.push(Item::Condition(self.read_condition(child, group.name, event)?));
            }
        }
        Ok(Filter { on_match, relation, items })
    }

    /// `onmatch`, or the `default` attribute of old schemas (with the opposite
    /// sense: `default="include"` logs everything but the matches).
    fn on_match(&self, element: &Element) -> Result<OnMatch, ConfigError> {
        let onmatch = element.attribute("onmatch");
        let default = element.attribute("default");
        match (onmatch, default) {
            (Some(attribute), None) => match attribute.value.to_ascii_lowercase().as_str() {
                "include" => Ok(OnMatch::Include),
                "exclude" => Ok(OnMatch::Exclude),
                _ => Err(self.error(
                    attribute.offset,
                    Problem::BadValue(format!("onmatch is `include` or `exclude`, not `{}`", attribute.value)),
                )),
            },
            (None, Some(attribute)) => match attribute.value.to_ascii_lowercase().as_str() {
                "include" => Ok(OnMatch::Exclude),
                "exclude" => Ok(OnMatch::Include),
                _ => Err(self.error(
                    attribute.offset,
                    Problem::BadValue(format!("default is `include` or `exclude`, not `{}`", attribute.value)),
                )),
            },
            (Some(_), Some(attribute)) => Err(self.error(
                attribute.offset,
                Problem::BadValue("`onmatch` and the older `default` cannot both be set".to_string()),
            )),
            (None, None) => Err(self.error(
                element.offset,
                Problem::MissingAttribute { element: element.name.clone(), attribute: "onmatch" },
            )),
        }
    }

    fn relation_attribute(&self, element: &Element) -> Result<Option<Relation>, ConfigError> {
        let Some(attribute) = element.attribute("groupRelation") else {
            return Ok(None);
        };
        match attribute.value.to_ascii_lowercase().as_str() {
            // An empty value counts as absent, as in Sysmon.
            "" => Ok(None),
            "and" => Ok(Some(Relation::And)),
            "or" => Ok(Some(Relation::Or)),
            _ => Err(self.error(
                attribute.offset,
                Problem::BadValue(format!("groupRelation is `and` or `or`, not `{}`", attribute.value)),
            )),
        }
    }

    /// A non-empty `name` attribute.
    fn name_attribute<'e>(&self, element: &'e Element) -> Result<Option<&'e str>, ConfigError> {
        let Some(attribute) = element.attribute("name") else {
            return Ok(None);
        };
        if attribute.value.chars().count() > MAX_RULE_NAME_CHARS {
            return Err(self.error(
                attribute.offset,
                Problem::BadValue(format!("a rule name is at most {MAX_RULE_NAME_CHARS} characters")),
            ));
        }
        Ok(Some(attribute.value.as_str()).filter(|name| !name.is_empty()))
    }

    fn read_rule(
        &mut self,
        element: &Element,
        group_name: Option<&str>,
        event: EventType,
    ) -> Result<Option<Rule>, ConfigError> {
        // Sysmon's default for a <Rule> is RuleCombineDefault, which is OR.
        let relation = self.relation_attribute(element)?.unwrap_or(Relation::Or);
        let name = self.name_attribute(element)?.or(group_name);
        let mut conditions = Vec::new();
        for child in element.elements() {
            if child.name.eq_ignore_ascii_case("Rule") {
                return Err(self.unexpected(child, element, "conditions (a <Rule> cannot hold another)", None));
            }
            conditions.push(self.read_condition(child, name, event)?);
        }
        if conditions.is_empty() {
            // Sysmon stores nothing for an empty <Rule>; it takes no part in matching.
            self.notice(element.offset, "empty <Rule> ignored");
            return Ok(None);
        }
        Ok(Some(Rule { relation, conditions }))
    }

    fn read_condition(
        &mut self,
        element: &Element,
        inherited_name: Option<&str>,
        event: EventType,
    ) -> Result<Condition, ConfigError> {
        let field = Field::from_name_in(event.fields(), &element.name).ok_or_else(|| {
            self.error(
                element.offset,
                Problem::UnknownField {
                    name: element.name.clone(),
                    event: event.name(),
                    suggestion: Field::from_name_ignoring_case_in(event.fields(), &element.name)
                        .map(|field| field.name().to_string()),
                },
            )
        })?;
        let condition_attribute = element.attribute("condition");
        let operator = Operator::from_attribute(condition_attribute.map(|attribute| attribute.value.as_str()))
            .ok_or_else(|| match condition_attribute {
                Some(attribute) => self.error(attribute.offset, Problem::UnknownCondition(attribute.value.clone())),
                None => self.error(element.offset, Problem::UnknownCondition(String::new())),
            })?;
        // A condition's own name wins over its <Rule>'s, which wins over its <RuleGroup>'s.
        let name = self.name_attribute(element)?.or(inherited_name).map(str::to_string);
        if let Some(child) = element.elements().next() {
            return Err(self.unexpected(child, element, "only the value to compare", None));
        }
        let (value, value_offset) = element.text();
        if value.trim() != value {
            // Sysmon compares the value as written, spaces and line breaks included.
            self.notice(
                value_offset,
                format_args!(
                    "the value of <{}> starts or ends with whitespace, which must then match too",
                    element.name
                ),
            );
        }
        Condition::new(field, operator, &value, name)
            .map_err(|reason| self.error(value_offset, Problem::BadValue(reason)))
    }

    fn finish_notices(&mut self) {
        let ignored = std::mem::take(&mut self.ignored);
        for Ignored { event_type, count, first_offset } in ignored {
            let filters = if count == 1 { "filter" } else { "filters" };
            self.notice(
                first_offset,
                format_args!(
                    "{count} <{event_type}> {filters} ignored: sockscope reports NetworkConnect and DnsQuery events only"
                ),
            );
        }
        if self.filters.is_empty() {
            self.notices.push(format!(
                "{}: no <NetworkConnect> filter, so no connection will be reported (Sysmon does not log \
                 NetworkConnect unless a filter enables it)",
                self.file
            ));
        }
    }
}

fn event_type_ignoring_case(name: &str) -> Option<&'static str> {
    SYSMON_EVENT_TYPES
        .iter()
        .chain(SOCKSCOPE_EVENT_TYPES)
        .copied()
        .find(|event_type| event_type.eq_ignore_ascii_case(name))
}

/// The schema version in hundredths (`4.9` and `4.90` are both 490), as Sysmon
/// normalises it with `"%.2f"`.
/// Sysmon's config schemas run from 1.0 to 4.x (4.90 in Sysmon 15); a
/// version outside that is a typo or a config for something else.
fn parse_schema_version(text: &str) -> Option<u64> {
    let version: f64 = text.trim().parse().ok()?;
    if !version.is_finite() || !(1.0..5.0).contains(&version) {
        return None;
    }
    // In range and positive, so the conversion is exact.
    Some((version * 100.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_characters_from_one() {
        let text = "ab\ncé\nxyz";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 2), (1, 3));
        assert_eq!(line_column(text, 3), (2, 1));
        assert_eq!(line_column(text, 6), (2, 3));
        assert_eq!(line_column(text, 7), (3, 1));
        assert_eq!(line_column(text, 100), (3, 4));
        // Inside a multi-byte character: its start.
        assert_eq!(line_column(text, 5), (2, 2));
    }

    #[test]
    fn schema_versions_compare_as_sysmon_rounds_them() {
        assert_eq!(parse_schema_version("4.1"), Some(410));
        assert_eq!(parse_schema_version("4.90"), Some(490));
        assert_eq!(parse_schema_version("4.9"), Some(490));
        assert_eq!(parse_schema_version(" 4.22 "), Some(422));
        assert_eq!(parse_schema_version("four"), None);
        assert_eq!(parse_schema_version("-1"), None);
        assert_eq!(parse_schema_version("NaN"), None);
    }

    #[test]
    fn utf16_and_invalid_utf8_are_reported_where_they_are() {
        let utf16 = parse_bytes(&[0xff, 0xfe, b'<', 0], "c.xml").expect_err("utf-16");
        assert_eq!(utf16.location(), Some((1, 1)));
        assert!(matches!(utf16.problem(), Some(Problem::Encoding(_))), "{utf16}");
        let latin1 = parse_bytes(b"<Sysmon>\n  <!-- caf\xe9 -->", "c.xml").expect_err("latin-1");
        assert_eq!(latin1.location(), Some((2, 11)));
        assert_eq!(latin1.to_string(), "c.xml:2:11: not a UTF-8 text file: byte 0xe9 is not valid UTF-8");
    }

    #[test]
    fn a_utf8_byte_order_mark_is_skipped() {
        let parsed = parse_bytes(b"\xef\xbb\xbf<Sysmon schemaversion=\"4.90\"/>", "c.xml").expect("parses");
        assert_eq!(parsed.schema_version, "4.90");
    }
}
