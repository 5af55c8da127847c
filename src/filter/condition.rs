//! One rule condition (`<DestinationPort condition="is any">80;443</DestinationPort>`)
//! and how it matches a field value.
//!
//! Semantics follow SysmonCommon `rules.c` (`MatchFilterOnSpecificRule`) as built
//! for Linux: case folding is ASCII only (SysmonForLinux `linuxWideChar.c`,
//! `WideTolower`), so the rule value is folded once here and the field value once
//! per event by the caller. Deliberate differences are noted where they are made.

use std::cmp::Ordering;

use super::field::{Field, ValueKind};

/// Sysmon's separator for the values of the `any`/`all` conditions.
const LIST_SEPARATOR: char = ';';

/// The longest rule name Sysmon stores (a 256-WCHAR buffer with its NUL).
pub const MAX_RULE_NAME_CHARS: usize = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Is,
    IsNot,
    IsAny,
    Contains,
    ContainsAny,
    ContainsAll,
    Excludes,
    ExcludesAny,
    ExcludesAll,
    BeginWith,
    NotBeginWith,
    EndWith,
    NotEndWith,
    LessThan,
    MoreThan,
    Image,
}

impl Operator {
    pub const ALL: &'static [Operator] = &[
        Operator::Is,
        Operator::IsNot,
        Operator::IsAny,
        Operator::Contains,
        Operator::ContainsAny,
        Operator::ContainsAll,
        Operator::Excludes,
        Operator::ExcludesAny,
        Operator::ExcludesAll,
        Operator::BeginWith,
        Operator::NotBeginWith,
        Operator::EndWith,
        Operator::NotEndWith,
        Operator::LessThan,
        Operator::MoreThan,
        Operator::Image,
    ];

    /// The `condition` attribute value, as Sysmon spells it.
    pub fn name(self) -> &'static str {
        match self {
            Operator::Is => "is",
            Operator::IsNot => "is not",
            Operator::IsAny => "is any",
            Operator::Contains => "contains",
            Operator::ContainsAny => "contains any",
            Operator::ContainsAll => "contains all",
            Operator::Excludes => "excludes",
            Operator::ExcludesAny => "excludes any",
            Operator::ExcludesAll => "excludes all",
            Operator::BeginWith => "begin with",
            Operator::NotBeginWith => "not begin with",
            Operator::EndWith => "end with",
            Operator::NotEndWith => "not end with",
            Operator::LessThan => "less than",
            Operator::MoreThan => "more than",
            Operator::Image => "image",
        }
    }

    /// Sysmon compares condition names case-insensitively and reads a missing or
    /// empty `condition` as `is` (SysmonCommon `manifest.tt`, `GetFilterOption`).
    pub fn from_attribute(value: Option<&str>) -> Option<Operator> {
        match value {
            None | Some("") => Some(Operator::Is),
            Some(name) => Operator::ALL.iter().copied().find(|op| op.name().eq_ignore_ascii_case(name)),
        }
    }

    fn takes_list(self) -> bool {
        matches!(
            self,
            Operator::IsAny
                | Operator::ContainsAny
                | Operator::ContainsAll
                | Operator::ExcludesAny
                | Operator::ExcludesAll
        )
    }
}

/// A condition ready to match: its value folded (and split) once, at load time.
#[derive(Debug, Clone)]
pub struct Condition {
    pub field: Field,
    pub operator: Operator,
    /// The `name` that applies: its own, else its `<Rule>`'s, else its `<RuleGroup>`'s.
    pub name: Option<String>,
    folded: String,
    /// For the `any`/`all` conditions: the non-empty `;`-separated values, folded.
    items: Vec<String>,
    /// For `less than` / `more than`: the value as a number, when it is one.
    number: Option<i64>,
}

impl Condition {
    /// Checks `value` against what `operator` can use on `field`; the error says why not.
    pub fn new(field: Field, operator: Operator, value: &str, name: Option<String>) -> Result<Condition, String> {
        let folded = value.to_ascii_lowercase();
        let items: Vec<String> = if operator.takes_list() {
            // Sysmon also tests the empty values around a stray `;` ("a;" contains
            // "" and so matches everything): dropped here, as nobody means that.
            folded.split(LIST_SEPARATOR).filter(|item| !item.is_empty()).map(str::to_string).collect()
        } else {
            Vec::new()
        };
        if operator.takes_list() && items.is_empty() {
            return Err(format!("`{}` needs at least one value (values are separated by `;`)", operator.name()));
        }
        let number = parse_integer(value);
        check_value_for_field(field, operator, value, &items, number)?;
        Ok(Condition { field, operator, name, folded, items, number })
    }

    /// The exact (folded) values this condition accepts, when it is `is` or
    /// `is any`: the event matches iff its value is one of them.
    pub fn exact_values(&self) -> Option<Vec<&str>> {
        match self.operator {
            Operator::Is => Some(vec![self.folded.as_str()]),
            Operator::IsAny => Some(self.items.iter().map(String::as_str).collect()),
            _ => None,
        }
    }

    /// Whether `value` (the field's value, ASCII-lowercased) satisfies the condition.
    pub fn matches(&self, value: &str) -> bool {
        let pattern = self.folded.as_str();
        match self.operator {
            Operator::Is => value == pattern,
            Operator::IsNot => value != pattern,
            Operator::IsAny => self.items.iter().any(|item| value == item),
            Operator::Contains => contains(value, pattern),
            Operator::ContainsAny => self.items.iter().any(|item| contains(value, item)),
            Operator::ContainsAll => self.items.iter().all(|item| contains(value, item)),
            Operator::Excludes => !contains(value, pattern),
            // As Sysmon implements them (and its unit tests expect): `excludes any`
            // holds when none of the values is present, `excludes all` when at
            // least one is missing.
            Operator::ExcludesAny => !self.items.iter().any(|item| contains(value, item)),
            Operator::ExcludesAll => !self.items.iter().all(|item| contains(value, item)),
            Operator::BeginWith => value.starts_with(pattern),
            Operator::NotBeginWith => !value.starts_with(pattern),
            Operator::EndWith => value.ends_with(pattern),
            Operator::NotEndWith => !value.ends_with(pattern),
            Operator::LessThan => self.compare(value) == Ordering::Less,
            Operator::MoreThan => self.compare(value) == Ordering::Greater,
            Operator::Image => {
                // A value without a separator names just the executable's file
                // name. Sysmon splits on `\` even on Linux, where that makes
                // `image` behave as `is`; sockscope splits on `/`.
                let compared = if pattern.contains('/') { value } else { file_name(value) };
                compared == pattern
            }
        }
    }

    /// Field value against the rule value: numerically when both are integers,
    /// otherwise as Sysmon does for everything (case-insensitive text order,
    /// folding to upper case like `WideStrcasecmp`, so `80` is "more than" `1024`).
    fn compare(&self, value: &str) -> Ordering {
        match (parse_integer(value), self.number) {
            (Some(field_number), Some(rule_number)) => field_number.cmp(&rule_number),
            _ => cmp_folded_upper(value, &self.folded),
        }
    }
}

/// Sysmon's substring search never matches inside an empty field, even for an
/// empty pattern.
fn contains(value: &str, pattern: &str) -> bool {
    !value.is_empty() && value.contains(pattern)
}

fn file_name(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, name)| name)
}

fn parse_integer(text: &str) -> Option<i64> {
    text.trim().parse().ok()
}

fn cmp_folded_upper(a: &str, b: &str) -> Ordering {
    a.bytes().map(|byte| byte.to_ascii_uppercase()).cmp(b.bytes().map(|byte| byte.to_ascii_uppercase()))
}

/// A number written the way the event writes it: decimal digits, no sign, no
/// leading zero. Anything else can never equal the field's text.
fn is_event_number(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) && (text == "0" || !text.starts_with('0'))
}

fn is_event_bool(text: &str) -> bool {
    text.eq_ignore_ascii_case("true") || text.eq_ignore_ascii_case("false")
}

/// Rejects rule values that can never mean what was written: a comparison of a
/// numeric field with something that is not a number, or a boolean field with
/// something other than true/false. Sysmon accepts these and silently never
/// matches (or always matches, for `is not`).
fn check_value_for_field(
    field: Field,
    operator: Operator,
    value: &str,
    items: &[String],
    number: Option<i64>,
) -> Result<(), String> {
    let equality = matches!(operator, Operator::Is | Operator::IsNot | Operator::IsAny);
    let ordering = matches!(operator, Operator::LessThan | Operator::MoreThan);
    let values: Vec<&str> =
        if operator == Operator::IsAny { items.iter().map(String::as_str).collect() } else { vec![value] };
    match field.kind() {
        ValueKind::Number if ordering && number.is_none() => {
            let given = if value.is_empty() { "an empty value".to_string() } else { format!("`{value}`") };
            Err(format!("`{}` on {} needs a number, not {given}", operator.name(), field.name()))
        }
        ValueKind::Number if equality => match values.iter().find(|candidate| !is_event_number(candidate)) {
            Some(bad) => Err(format!(
                "{} is a decimal number (like 443); `{bad}` can never equal it{}",
                field.name(),
                if operator == Operator::IsAny { " (values are separated by `;`, without spaces)" } else { "" }
            )),
            None => Ok(()),
        },
        ValueKind::Bool if ordering => {
            Err(format!("`{}` cannot compare {}, which is true or false", operator.name(), field.name()))
        }
        ValueKind::Bool if equality => match values.iter().find(|candidate| !is_event_bool(candidate)) {
            Some(bad) => Err(format!("{} is `true` or `false`, not `{bad}`", field.name())),
            None => Ok(()),
        },
        _ => Ok(()),
    }?;
    check_range_for_field(field, operator, &values, number)
}

/// Port numbers are 0..=65535 and addresses IPv4 or IPv6 ones: a rule
/// value outside what the field can hold is refused rather than never
/// (or, negated, always) matching.
fn check_range_for_field(field: Field, operator: Operator, values: &[&str], number: Option<i64>) -> Result<(), String> {
    let equality = matches!(operator, Operator::Is | Operator::IsNot | Operator::IsAny);
    let ordering = matches!(operator, Operator::LessThan | Operator::MoreThan);
    match field {
        Field::SourcePort | Field::DestinationPort => {
            if ordering && number.is_some_and(|n| !(0..=65_535).contains(&n)) {
                return Err(format!("{} is a port number, 0 to 65535; `{}` is out of range", field.name(), values[0]));
            }
            if equality {
                if let Some(bad) = values.iter().find(|v| v.parse::<u32>().map_or(true, |n| n > 65_535)) {
                    return Err(format!("{} is a port number, 0 to 65535; `{bad}` is out of range", field.name()));
                }
            }
            Ok(())
        }
        Field::SourceIp | Field::DestinationIp if equality => {
            match values.iter().find(|v| v.parse::<std::net::IpAddr>().is_err()) {
                Some(bad) => Err(format!(
                    "{} is an IPv4 or IPv6 address (like 10.0.0.1 or fd00::1); `{bad}` is not one",
                    field.name()
                )),
                None => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_condition(operator: Operator, value: &str) -> Condition {
        Condition::new(Field::CommandLine, operator, value, None).expect("valid condition")
    }

    /// `value` as the caller hands it over: ASCII-lowercased.
    fn matches(operator: Operator, rule_value: &str, field_value: &str) -> bool {
        text_condition(operator, rule_value).matches(&field_value.to_ascii_lowercase())
    }

    #[test]
    fn condition_names_are_case_insensitive_and_default_to_is() {
        assert_eq!(Operator::from_attribute(None), Some(Operator::Is));
        assert_eq!(Operator::from_attribute(Some("")), Some(Operator::Is));
        assert_eq!(Operator::from_attribute(Some("Begin With")), Some(Operator::BeginWith));
        assert_eq!(Operator::from_attribute(Some("NOT END WITH")), Some(Operator::NotEndWith));
        assert_eq!(Operator::from_attribute(Some("begins with")), None);
        for &op in Operator::ALL {
            assert_eq!(Operator::from_attribute(Some(op.name())), Some(op));
        }
    }

    #[test]
    fn is_and_is_not_compare_whole_values_ignoring_ascii_case() {
        assert!(matches(Operator::Is, "/Something:Equal", "/someThing:equaL"));
        assert!(!matches(Operator::Is, "/Something:Equal", "/Something:Equal "));
        assert!(!matches(Operator::IsNot, "/Something:Equal", "/SOMETHING:EQUAL"));
        assert!(matches(Operator::IsNot, "/Something:Equal", "/something:else"));
        // Folding is ASCII only, as Sysmon for Linux.
        assert!(!matches(Operator::Is, "Élan", "élan"));
    }

    #[test]
    fn is_any_matches_one_whole_value() {
        assert!(matches(Operator::IsAny, "/Something:Equal;OrElse", "orELSE"));
        assert!(matches(Operator::IsAny, "/Something:Equal;OrElse", "/something:equal"));
        assert!(!matches(Operator::IsAny, "/Something:Equal;OrElse", "OrElse2"));
        assert!(!matches(Operator::IsAny, "a;b", "a;b"));
    }

    #[test]
    fn contains_family() {
        assert!(matches(Operator::Contains, "Equal", "/Flag1 /somEThing:eqUal /Flag2"));
        assert!(!matches(Operator::Contains, "Equal", "/flag"));
        assert!(matches(Operator::ContainsAny, "iexplore;OrElse", "x orelse y"));
        assert!(!matches(Operator::ContainsAny, "iexplore;OrElse", "x y"));
        assert!(matches(Operator::ContainsAll, "a1;B2", "xx b2 yy A1"));
        assert!(!matches(Operator::ContainsAll, "a1;B2", "xx b2 yy"));
    }

    #[test]
    fn excludes_family_as_sysmon_implements_it() {
        assert!(matches(Operator::Excludes, "Equal", "/flag"));
        assert!(!matches(Operator::Excludes, "Equal", "/flag EQUAL"));
        // excludes any: none of the values is present.
        assert!(matches(Operator::ExcludesAny, "/Something:Equal;OrElse", "/something:else"));
        assert!(!matches(Operator::ExcludesAny, "/Something:Equal;OrElse", "/Flag3 OrElse /Flag4"));
        // excludes all: at least one value is missing.
        assert!(matches(Operator::ExcludesAll, "/Something:Equal;OrElse", "/FlagP OrElse /FlagC"));
        assert!(matches(Operator::ExcludesAll, "/Something:Equal;OrElse", "/something:else"));
        assert!(!matches(Operator::ExcludesAll, "/Something:Equal;OrElse", "/something:equal orelse"));
    }

    #[test]
    fn empty_field_never_contains_anything() {
        assert!(!matches(Operator::Contains, "", ""));
        assert!(matches(Operator::Contains, "", "x"));
        assert!(matches(Operator::Excludes, "a", ""));
    }

    #[test]
    fn begin_and_end_with() {
        assert!(matches(Operator::BeginWith, "/USR/", "/usr/bin/curl"));
        assert!(!matches(Operator::BeginWith, "/usr/", "/opt/usr/"));
        assert!(matches(Operator::NotBeginWith, "/usr/", "/opt/usr/"));
        assert!(!matches(Operator::NotBeginWith, "/usr/", "/Usr/x"));
        assert!(matches(Operator::EndWith, "/CURL", "/usr/bin/curl"));
        assert!(!matches(Operator::EndWith, "/usr/bin/curl", "curl"));
        assert!(matches(Operator::NotEndWith, "curl", "/usr/bin/wget"));
        assert!(!matches(Operator::NotEndWith, "curl", "/usr/bin/CURL"));
    }

    #[test]
    fn image_matches_full_path_or_file_name() {
        assert!(matches(Operator::Image, "curl", "/usr/bin/Curl"));
        assert!(matches(Operator::Image, "/usr/bin/curl", "/usr/bin/curl"));
        assert!(!matches(Operator::Image, "/bin/curl", "/usr/bin/curl"));
        assert!(!matches(Operator::Image, "cur", "/usr/bin/curl"));
        assert!(matches(Operator::Image, "curl", "curl"));
    }

    #[test]
    fn less_and_more_than_are_numeric_when_both_sides_are_numbers() {
        let below = Condition::new(Field::DestinationPort, Operator::LessThan, "1024", None).expect("valid");
        assert!(below.matches("80"));
        assert!(!below.matches("1024"));
        assert!(!below.matches("8080"));
        let above = Condition::new(Field::DestinationPort, Operator::MoreThan, " 1024 ", None).expect("valid");
        assert!(above.matches("8080"));
        assert!(!above.matches("80"));
    }

    #[test]
    fn less_and_more_than_fall_back_to_sysmon_text_order() {
        assert!(matches(Operator::LessThan, "TargetString", "tarGeTstrinF"));
        assert!(!matches(Operator::LessThan, "TargetString", "TargetStrinh"));
        assert!(!matches(Operator::LessThan, "TargetString", "targetstring"));
        assert!(matches(Operator::MoreThan, "TargetString", "tArgeTStringH"));
        // Upper-case folding puts `_` after letters, as WideStrcasecmp does.
        assert!(matches(Operator::MoreThan, "a", "_"));
    }

    #[test]
    fn numeric_fields_reject_values_that_cannot_match() {
        for (operator, value) in [
            (Operator::LessThan, "high"),
            (Operator::MoreThan, ""),
            (Operator::Is, "https"),
            (Operator::Is, "080"),
            (Operator::IsNot, "-1"),
            (Operator::IsAny, "80; 443"),
        ] {
            let result = Condition::new(Field::DestinationPort, operator, value, None);
            assert!(result.is_err(), "{} {value:?} accepted", operator.name());
        }
        assert!(Condition::new(Field::DestinationPort, Operator::IsAny, "80;443;", None).is_ok());
        assert!(Condition::new(Field::DestinationPort, Operator::BeginWith, "80", None).is_ok());
        assert!(Condition::new(Field::SourceIp, Operator::LessThan, "10.0.0.0", None).is_ok());
    }

    #[test]
    fn boolean_fields_take_true_or_false() {
        assert!(Condition::new(Field::Initiated, Operator::Is, "TRUE", None).is_ok());
        assert!(Condition::new(Field::Initiated, Operator::Is, "1", None).is_err());
        assert!(Condition::new(Field::SourceIsIpv6, Operator::IsAny, "true;yes", None).is_err());
        assert!(Condition::new(Field::Initiated, Operator::LessThan, "true", None).is_err());
        let initiated = Condition::new(Field::Initiated, Operator::Is, "True", None).expect("valid");
        assert!(initiated.matches("true"));
        assert!(!initiated.matches("false"));
    }

    #[test]
    fn lists_need_a_value() {
        let error = Condition::new(Field::Image, Operator::ContainsAny, ";;", None).expect_err("empty list");
        assert!(error.contains("at least one value"), "{error}");
        // A stray separator does not make `contains any` match everything.
        assert!(!matches(Operator::ContainsAny, "curl;", "/usr/bin/wget"));
    }
}
