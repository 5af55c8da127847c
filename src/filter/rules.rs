//! NetworkConnect and DnsQuery filters and how Sysmon evaluates them against one event.
//!
//! Follows SysmonCommon `rules.c` (`FilterEventRules`, `MatchFilterGroup`,
//! `CombineGroupDone`).

use std::borrow::Cow;

use super::condition::Condition;
use super::field::{dns_field_value, field_value, Field};
use crate::event::{DnsQuery, Extra, NetworkConnect};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnMatch {
    Include,
    Exclude,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    And,
    Or,
}

/// One `<NetworkConnect onmatch=...>` (or `<DnsQuery ...>`) element.
#[derive(Debug, Clone)]
pub struct Filter {
    pub on_match: OnMatch,
    pub relation: Relation,
    pub items: Vec<Item>,
}

#[derive(Debug, Clone)]
pub enum Item {
    Condition(Condition),
    /// A `<Rule>`: its conditions combined by its own relation.
    Rule(Rule),
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub relation: Relation,
    pub conditions: Vec<Condition>,
}

/// The event a rule reads.
#[derive(Clone, Copy)]
enum Source<'e> {
    Network(&'e NetworkConnect),
    /// A lifecycle event: NetworkConnect's fields, then its own.
    Lifecycle(&'e NetworkConnect, &'e [(&'static str, Extra)]),
    Dns(&'e DnsQuery),
}

/// The event's field values, ASCII-lowercased once and only when a rule asks.
pub struct FieldValues<'e> {
    event: Source<'e>,
    folded: [Option<Cow<'e, str>>; Field::COUNT],
}

impl<'e> FieldValues<'e> {
    pub fn new(event: &'e NetworkConnect) -> Self {
        FieldValues { event: Source::Network(event), folded: std::array::from_fn(|_| None) }
    }

    /// A lifecycle event (252, 253): its NetworkConnect fields and its own.
    pub fn with_extras(event: &'e NetworkConnect, extras: &'e [(&'static str, Extra)]) -> Self {
        FieldValues { event: Source::Lifecycle(event, extras), folded: std::array::from_fn(|_| None) }
    }

    pub fn dns(event: &'e DnsQuery) -> Self {
        FieldValues { event: Source::Dns(event), folded: std::array::from_fn(|_| None) }
    }

    fn get(&mut self, field: Field) -> &str {
        let event = self.event;
        self.folded[field as usize].get_or_insert_with(|| {
            fold(match event {
                Source::Network(e) => field_value(e, field),
                Source::Lifecycle(e, extras) => {
                    let own =
                        field.lifecycle_event().and_then(|_| extras.iter().find(|(name, _)| *name == field.name()));
                    own.map_or_else(|| field_value(e, field), |(_, value)| value.text())
                }
                Source::Dns(e) => dns_field_value(e, field),
            })
        })
    }
}

fn fold(value: Cow<'_, str>) -> Cow<'_, str> {
    if value.bytes().any(|byte| byte.is_ascii_uppercase()) {
        Cow::Owned(value.to_ascii_lowercase())
    } else {
        value
    }
}

/// `Some(rule name)` when the group matched; the name is `None` when no matching
/// condition has one.
type GroupMatch<'r> = Option<Option<&'r str>>;

impl Filter {
    /// Whether the filter matches, and the RuleName that match gives.
    ///
    /// In an AND filter, conditions on the same field outside `<Rule>`s are
    /// alternatives: the field must satisfy one of them (Sysmon's
    /// `CombineGroupDone`; its blog "Sysmon - The rules about rules"). The name is
    /// the last one set by a matching condition, as Sysmon overwrites it on each
    /// match. Sysmon also keeps names set by conditions of groups that then
    /// failed; here a name only comes from what matched.
    pub fn evaluate<'r>(&'r self, values: &mut FieldValues<'_>) -> GroupMatch<'r> {
        // An empty filter matches nothing ("No rules, means no match by default").
        if self.items.is_empty() {
            return None;
        }
        match self.relation {
            Relation::Or => self.items.iter().find_map(|item| item.evaluate(values)),
            Relation::And => self.evaluate_and(values),
        }
    }

    fn evaluate_and<'r>(&'r self, values: &mut FieldValues<'_>) -> GroupMatch<'r> {
        let mut satisfied = [false; Field::COUNT];
        let mut name = None;
        for (index, item) in self.items.iter().enumerate() {
            match item {
                Item::Condition(condition) => {
                    if satisfied[condition.field as usize] {
                        continue;
                    }
                    if condition.matches(values.get(condition.field)) {
                        satisfied[condition.field as usize] = true;
                        name = condition.name.as_deref().or(name);
                    } else if !self.field_tested_after(index, condition.field) {
                        return None;
                    }
                }
                Item::Rule(rule) => name = rule.evaluate(values)?.or(name),
            }
        }
        Some(name)
    }

    fn field_tested_after(&self, index: usize, field: Field) -> bool {
        self.items[index + 1..]
            .iter()
            .any(|item| matches!(item, Item::Condition(condition) if condition.field == field))
    }
}

impl Item {
    fn evaluate<'r>(&'r self, values: &mut FieldValues<'_>) -> GroupMatch<'r> {
        match self {
            Item::Condition(condition) => {
                condition.matches(values.get(condition.field)).then_some(condition.name.as_deref())
            }
            Item::Rule(rule) => rule.evaluate(values),
        }
    }
}

impl Rule {
    /// Inside a `<Rule>` every condition counts on its own, even on the same field.
    fn evaluate<'r>(&'r self, values: &mut FieldValues<'_>) -> GroupMatch<'r> {
        match self.relation {
            Relation::Or => self.conditions.iter().find_map(|condition| {
                condition.matches(values.get(condition.field)).then_some(condition.name.as_deref())
            }),
            Relation::And => {
                let mut name = None;
                for condition in &self.conditions {
                    if !condition.matches(values.get(condition.field)) {
                        return None;
                    }
                    name = condition.name.as_deref().or(name);
                }
                Some(name)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::condition::Operator;
    use crate::filter::field::tests::sample_event;

    fn condition(field: Field, operator: Operator, value: &str, name: Option<&str>) -> Item {
        Item::Condition(Condition::new(field, operator, value, name.map(str::to_string)).expect("valid"))
    }

    fn filter(relation: Relation, items: Vec<Item>) -> Filter {
        Filter { on_match: OnMatch::Include, relation, items }
    }

    fn run(filter: &Filter) -> Option<Option<String>> {
        let event = sample_event();
        let mut values = FieldValues::new(&event);
        filter.evaluate(&mut values).map(|name| name.map(str::to_string))
    }

    #[test]
    fn empty_filter_matches_nothing() {
        assert_eq!(run(&filter(Relation::Or, vec![])), None);
        assert_eq!(run(&filter(Relation::And, vec![])), None);
    }

    #[test]
    fn or_takes_the_first_matching_name() {
        let items = vec![
            condition(Field::DestinationPort, Operator::Is, "80", Some("http")),
            condition(Field::Image, Operator::EndWith, "/curl", Some("curl")),
            condition(Field::DestinationPort, Operator::Is, "443", Some("https")),
        ];
        assert_eq!(run(&filter(Relation::Or, items)), Some(Some("curl".into())));
    }

    #[test]
    fn and_needs_every_field() {
        let both = vec![
            condition(Field::Image, Operator::Image, "curl", None),
            condition(Field::DestinationPort, Operator::Is, "443", Some("tls")),
        ];
        assert_eq!(run(&filter(Relation::And, both)), Some(Some("tls".into())));
        let one_fails = vec![
            condition(Field::Image, Operator::Image, "curl", Some("curl")),
            condition(Field::DestinationPort, Operator::Is, "80", None),
        ];
        assert_eq!(run(&filter(Relation::And, one_fails)), None);
    }

    #[test]
    fn and_treats_conditions_on_one_field_as_alternatives() {
        let items = vec![
            condition(Field::DestinationPort, Operator::Is, "80", Some("http")),
            condition(Field::Image, Operator::Image, "curl", None),
            condition(Field::DestinationPort, Operator::Is, "443", Some("https")),
            condition(Field::DestinationPort, Operator::Is, "8443", Some("alt")),
        ];
        assert_eq!(run(&filter(Relation::And, items)), Some(Some("https".into())));
        let none_of_the_ports = vec![
            condition(Field::DestinationPort, Operator::Is, "80", None),
            condition(Field::DestinationPort, Operator::Is, "8080", None),
            condition(Field::Image, Operator::Image, "curl", None),
        ];
        assert_eq!(run(&filter(Relation::And, none_of_the_ports)), None);
    }

    #[test]
    fn and_keeps_the_last_name_set() {
        let items = vec![
            condition(Field::Image, Operator::Image, "curl", Some("first")),
            condition(Field::Protocol, Operator::Is, "tcp", None),
            condition(Field::DestinationPort, Operator::Is, "443", Some("last")),
        ];
        assert_eq!(run(&filter(Relation::And, items)), Some(Some("last".into())));
    }

    #[test]
    fn rule_and_counts_every_condition_even_on_one_field() {
        let rule = |second: &str| {
            Item::Rule(Rule {
                relation: Relation::And,
                conditions: vec![
                    Condition::new(Field::CommandLine, Operator::BeginWith, "curl", Some("r".into())).expect("valid"),
                    Condition::new(Field::CommandLine, Operator::Contains, second, Some("r".into())).expect("valid"),
                ],
            })
        };
        assert_eq!(run(&filter(Relation::Or, vec![rule("example.com")])), Some(Some("r".into())));
        assert_eq!(run(&filter(Relation::Or, vec![rule("example.org")])), None);
    }

    #[test]
    fn rule_or_and_rules_inside_and_filters() {
        let rule = Item::Rule(Rule {
            relation: Relation::Or,
            conditions: vec![
                Condition::new(Field::DestinationPort, Operator::Is, "22", Some("ssh".into())).expect("valid"),
                Condition::new(Field::DestinationPort, Operator::Is, "443", Some("tls".into())).expect("valid"),
            ],
        });
        let items = vec![condition(Field::Initiated, Operator::Is, "true", None), rule];
        assert_eq!(run(&filter(Relation::And, items)), Some(Some("tls".into())));
        let failing_rule = Item::Rule(Rule {
            relation: Relation::Or,
            conditions: vec![Condition::new(Field::DestinationPort, Operator::Is, "22", None).expect("valid")],
        });
        let items = vec![condition(Field::Initiated, Operator::Is, "true", Some("out")), failing_rule];
        assert_eq!(run(&filter(Relation::And, items)), None);
    }

    #[test]
    fn a_failed_rule_leaves_no_name_behind() {
        let half_matching = Item::Rule(Rule {
            relation: Relation::And,
            conditions: vec![
                Condition::new(Field::Image, Operator::Image, "curl", Some("leak".into())).expect("valid"),
                Condition::new(Field::DestinationPort, Operator::Is, "22", Some("leak".into())).expect("valid"),
            ],
        });
        let items = vec![half_matching, condition(Field::Protocol, Operator::Is, "tcp", None)];
        assert_eq!(run(&filter(Relation::Or, items)), Some(None));
    }

    #[test]
    fn field_values_are_folded_once() {
        let event = sample_event();
        let mut values = FieldValues::new(&event);
        assert_eq!(values.get(Field::Image), "/usr/bin/curl");
        assert_eq!(values.get(Field::User), "alice");
        assert_eq!(values.get(Field::DestinationPort), "443");
        assert!(values.folded[Field::DestinationIp as usize].is_none());
    }
}
