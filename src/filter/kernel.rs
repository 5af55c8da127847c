//! The part of a config the kernel can apply: events whose protocol and port,
//! or protocol and address, alone make an exclude filter match. Exclude wins
//! in Sysmon's semantics, so the userspace engine drops every such event
//! whatever its other fields — dropping it in the kernel gives the same
//! answer, without the event ever reaching userspace. Anything less certain
//! is left to userspace.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::condition::Condition;
use super::field::Field;
use super::rules::{Filter, Item, Relation};
use crate::text::{canonical_ip, ip_text};

/// Which port or address an entry is about, in Sysmon's direction
/// (Destination is the remote end for connect/send, the local end for
/// accept/receive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Side {
    Destination = 0,
    Source = 1,
    /// Every port: the whole protocol is excluded.
    Any = 2,
}

/// One kernel exclusion: protocol (0: both, 6 tcp, 17 udp), side, port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Exclusion {
    pub protocol: u8,
    pub side: Side,
    pub port: u16,
}

/// One kernel exclusion on an address: protocol (0: both), side
/// (Destination or Source), the address as 16 bytes (IPv4 as ::ffff:a.b.c.d,
/// as the kernel side compares it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct AddrExclusion {
    pub protocol: u8,
    pub side: Side,
    pub addr: [u8; 16],
}

/// Everything the kernel may apply.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KernelExclusions {
    pub ports: BTreeSet<Exclusion>,
    pub addrs: BTreeSet<AddrExclusion>,
}

impl KernelExclusions {
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty() && self.addrs.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ports.len() + self.addrs.len()
    }
}

enum Entry {
    Port(Exclusion),
    Addr(AddrExclusion),
}

/// A constraint one condition puts on the event, if it is one we can map.
enum Atom {
    Protocols(Vec<u8>),
    Ports(Side, Vec<u16>),
    Addrs(Side, Vec<[u8; 16]>),
}

/// The address an event field holds when it reads exactly `value`: only a
/// value in the form the sensor writes (IPv4 dotted, IPv4-mapped written as
/// IPv4, IPv6 compressed lowercase) can ever match; others match nothing.
fn event_addr(value: &str) -> Option<[u8; 16]> {
    let ip: IpAddr = value.parse().ok()?;
    let ip = canonical_ip(ip);
    if ip_text(ip) != value {
        return None;
    }
    Some(match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    })
}

fn atom(c: &Condition) -> Option<Atom> {
    let values = c.exact_values()?;
    match c.field {
        Field::Protocol => Some(Atom::Protocols(
            values
                .iter()
                .filter_map(|v| match *v {
                    "tcp" => Some(6),
                    "udp" => Some(17),
                    _ => None, // matches nothing we report
                })
                .collect(),
        )),
        Field::DestinationPort | Field::SourcePort => {
            let side = if c.field == Field::DestinationPort { Side::Destination } else { Side::Source };
            // The event's value is the port in plain decimal: "080" never matches.
            let ports = values.iter().filter_map(|v| v.parse::<u16>().ok().filter(|p| p.to_string() == *v)).collect();
            Some(Atom::Ports(side, ports))
        }
        Field::DestinationIp | Field::SourceIp => {
            let side = if c.field == Field::DestinationIp { Side::Destination } else { Side::Source };
            Some(Atom::Addrs(side, values.iter().filter_map(|v| event_addr(v)).collect()))
        }
        _ => None,
    }
}

/// Exclusions implied by `atoms` all holding (an AND of them).
fn conjunction(atoms: &[Atom]) -> Option<Vec<Entry>> {
    let mut protocols: Option<Vec<u8>> = None;
    let mut ports: Option<(Side, Vec<u16>)> = None;
    let mut addrs: Option<(Side, Vec<[u8; 16]>)> = None;
    for a in atoms {
        match a {
            Atom::Protocols(p) => match &mut protocols {
                // Two protocol conditions in one AND: both must hold.
                Some(existing) => existing.retain(|x| p.contains(x)),
                None => protocols = Some(p.clone()),
            },
            Atom::Ports(side, p) => match &mut ports {
                Some((s, existing)) if s == side => existing.retain(|x| p.contains(x)),
                Some(_) => return None, // both ports constrained: not mapped
                None => ports = Some((*side, p.clone())),
            },
            Atom::Addrs(side, p) => match &mut addrs {
                Some((s, existing)) if s == side => existing.retain(|x| p.contains(x)),
                Some(_) => return None, // both addresses constrained: not mapped
                None => addrs = Some((*side, p.clone())),
            },
        }
    }
    let protocols = protocols.unwrap_or_else(|| vec![0]);
    let mut out = Vec::new();
    for &protocol in &protocols {
        match (&ports, &addrs) {
            (Some(_), Some(_)) => return None, // a port and an address: no kernel key for both
            (Some((side, list)), None) => {
                out.extend(list.iter().map(|&port| Entry::Port(Exclusion { protocol, side: *side, port })))
            }
            (None, Some((side, list))) => {
                out.extend(list.iter().map(|&addr| Entry::Addr(AddrExclusion { protocol, side: *side, addr })))
            }
            (None, None) if protocol != 0 => out.push(Entry::Port(Exclusion { protocol, side: Side::Any, port: 0 })),
            (None, None) => return None, // no constraint at all
        }
    }
    Some(out)
}

/// Each of `conditions` alone is enough (an OR of them).
fn disjunction<'c>(conditions: impl IntoIterator<Item = &'c Condition>) -> Vec<Entry> {
    conditions.into_iter().filter_map(|c| atom(c).and_then(|a| conjunction(&[a]))).flatten().collect()
}

fn filter_exclusions(filter: &Filter) -> Vec<Entry> {
    if filter.items.is_empty() {
        return Vec::new();
    }
    match filter.relation {
        Relation::Or => filter
            .items
            .iter()
            .flat_map(|item| match item {
                Item::Condition(c) => disjunction([c]),
                Item::Rule(r) if r.relation == Relation::Or => disjunction(&r.conditions),
                Item::Rule(r) => all_mapped(&r.conditions).and_then(|atoms| conjunction(&atoms)).unwrap_or_default(),
            })
            .collect(),
        Relation::And => {
            // Conditions on one field outside <Rule>s are alternatives there;
            // group them per field, and require every item to be mapped.
            let mut conditions = Vec::new();
            for item in &filter.items {
                match item {
                    Item::Condition(c) => conditions.push(c),
                    Item::Rule(_) => return Vec::new(),
                }
            }
            let mut per_field: Vec<(Field, Vec<&Condition>)> = Vec::new();
            for c in conditions {
                match per_field.iter_mut().find(|(f, _)| *f == c.field) {
                    Some((_, list)) => list.push(c),
                    None => per_field.push((c.field, vec![c])),
                }
            }
            let mut atoms = Vec::new();
            for (_, alternatives) in per_field {
                let Some(mapped) = all_mapped(alternatives.iter().copied()) else {
                    return Vec::new();
                };
                // Alternatives on one field: merge their values.
                atoms.push(merge(mapped));
            }
            conjunction(&atoms).unwrap_or_default()
        }
    }
}

fn all_mapped<'c>(conditions: impl IntoIterator<Item = &'c Condition>) -> Option<Vec<Atom>> {
    conditions.into_iter().map(atom).collect()
}

fn merge(atoms: Vec<Atom>) -> Atom {
    let mut iter = atoms.into_iter();
    let first = iter.next().unwrap_or(Atom::Protocols(Vec::new()));
    iter.fold(first, |acc, a| match (acc, a) {
        (Atom::Protocols(mut x), Atom::Protocols(y)) => {
            x.extend(y);
            Atom::Protocols(x)
        }
        (Atom::Ports(s, mut x), Atom::Ports(_, y)) => {
            x.extend(y);
            Atom::Ports(s, x)
        }
        (Atom::Addrs(s, mut x), Atom::Addrs(_, y)) => {
            x.extend(y);
            Atom::Addrs(s, x)
        }
        (acc, _) => acc, // one field: never mixed
    })
}

/// Every exclusion the kernel may apply for these exclude filters.
pub fn kernel_exclusions(excludes: &[Filter]) -> KernelExclusions {
    let mut out = KernelExclusions::default();
    for entry in excludes.iter().flat_map(filter_exclusions) {
        match entry {
            Entry::Port(e) => out.ports.insert(e),
            Entry::Addr(e) => out.addrs.insert(e),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::RuleSet;

    fn all(body: &str) -> KernelExclusions {
        let xml = format!("<Sysmon schemaversion=\"4.90\"><EventFiltering>{body}</EventFiltering></Sysmon>");
        let (rules, _) = RuleSet::from_str(&xml, "t.xml").unwrap_or_else(|e| panic!("{e}"));
        rules.kernel_exclusions()
    }

    /// The port exclusions (asserting there are no address ones).
    fn of(body: &str) -> BTreeSet<Exclusion> {
        let got = all(body);
        assert!(got.addrs.is_empty(), "{got:?}");
        got.ports
    }

    fn v4(a: [u8; 4]) -> [u8; 16] {
        std::net::Ipv4Addr::from(a).to_ipv6_mapped().octets()
    }

    fn addr(protocol: u8, side: Side, addr: [u8; 16]) -> AddrExclusion {
        AddrExclusion { protocol, side, addr }
    }

    #[test]
    fn address_conditions_in_exclude() {
        let got = all("<RuleGroup groupRelation=\"or\"><NetworkConnect onmatch=\"exclude\">\
             <DestinationIp condition=\"is\">127.0.0.1</DestinationIp>\
             <SourceIp condition=\"is any\">FD00::2;10.1.2.3</SourceIp></NetworkConnect></RuleGroup>");
        let fd00_2 = "fd00::2".parse::<std::net::Ipv6Addr>().expect("addr").octets();
        assert_eq!(
            got.addrs,
            [
                addr(0, Side::Destination, v4([127, 0, 0, 1])),
                addr(0, Side::Source, fd00_2),
                addr(0, Side::Source, v4([10, 1, 2, 3])),
            ]
            .into()
        );
        assert!(got.ports.is_empty());
        let udp = all("<RuleGroup groupRelation=\"and\"><NetworkConnect onmatch=\"exclude\">\
             <Protocol condition=\"is\">udp</Protocol><DestinationIp condition=\"is\">127.0.0.53</DestinationIp>\
             </NetworkConnect></RuleGroup>");
        assert_eq!(udp.addrs, [addr(17, Side::Destination, v4([127, 0, 0, 53]))].into());
    }

    #[test]
    fn addresses_the_sensor_never_writes_are_not_mapped() {
        // The sensor writes IPv4-mapped addresses as IPv4 and IPv6
        // compressed: these texts match no event, so the kernel drops nothing.
        // (Texts that are no address at all are refused by the parser.)
        for v in ["::ffff:127.0.0.1", "fd00:0::2", "FD00:0:0::2"] {
            let got = all(&format!(
                "<RuleGroup groupRelation=\"or\"><NetworkConnect onmatch=\"exclude\">\
                 <DestinationIp condition=\"is\">{v}</DestinationIp></NetworkConnect></RuleGroup>"
            ));
            assert!(got.is_empty(), "{v}: {got:?}");
        }
        // A port and an address in one AND: no kernel key holds both.
        assert!(all("<RuleGroup groupRelation=\"and\"><NetworkConnect onmatch=\"exclude\">\
             <DestinationIp condition=\"is\">127.0.0.1</DestinationIp>\
             <DestinationPort condition=\"is\">53</DestinationPort></NetworkConnect></RuleGroup>")
        .is_empty());
        // Other operators.
        assert!(all("<RuleGroup groupRelation=\"or\"><NetworkConnect onmatch=\"exclude\">\
             <DestinationIp condition=\"begin with\">127.</DestinationIp></NetworkConnect></RuleGroup>")
        .is_empty());
    }

    fn ex(protocol: u8, side: Side, port: u16) -> Exclusion {
        Exclusion { protocol, side, port }
    }

    #[test]
    fn single_port_conditions_in_exclude() {
        let got = of("<RuleGroup groupRelation=\"or\"><NetworkConnect onmatch=\"exclude\">\
             <DestinationPort condition=\"is\">53</DestinationPort>\
             <SourcePort condition=\"is any\">123;5353</SourcePort>\
             <Image condition=\"is\">/usr/bin/x</Image></NetworkConnect></RuleGroup>");
        assert_eq!(got, [ex(0, Side::Destination, 53), ex(0, Side::Source, 123), ex(0, Side::Source, 5353)].into());
    }

    #[test]
    fn and_of_protocol_and_port() {
        let got = of("<RuleGroup groupRelation=\"and\"><NetworkConnect onmatch=\"exclude\">\
             <Protocol condition=\"is\">udp</Protocol>\
             <DestinationPort condition=\"is\">53</DestinationPort></NetworkConnect></RuleGroup>");
        assert_eq!(got, [ex(17, Side::Destination, 53)].into());
        let whole = of("<RuleGroup groupRelation=\"and\"><NetworkConnect onmatch=\"exclude\">\
             <Protocol condition=\"is\">udp</Protocol></NetworkConnect></RuleGroup>");
        assert_eq!(whole, [ex(17, Side::Any, 0)].into());
    }

    #[test]
    fn anything_less_certain_is_left_to_userspace() {
        // AND with a field the kernel does not see.
        assert!(of("<RuleGroup groupRelation=\"and\"><NetworkConnect onmatch=\"exclude\">\
             <DestinationPort condition=\"is\">53</DestinationPort><Image condition=\"is\">/x</Image>\
             </NetworkConnect></RuleGroup>")
        .is_empty());
        // Include filters, other operators, non-canonical numbers.
        assert!(of("<RuleGroup groupRelation=\"or\"><NetworkConnect onmatch=\"include\">\
             <DestinationPort condition=\"is\">53</DestinationPort></NetworkConnect></RuleGroup>")
        .is_empty());
        assert!(of("<RuleGroup groupRelation=\"or\"><NetworkConnect onmatch=\"exclude\">\
             <DestinationPort condition=\"less than\">1024</DestinationPort>\
             <SourcePort condition=\"more than\">1</SourcePort></NetworkConnect></RuleGroup>")
        .is_empty());
        assert!(RuleSet::allow_all().kernel_exclusions().is_empty());
    }

    #[test]
    fn and_alternatives_on_one_field() {
        let got = of("<RuleGroup groupRelation=\"and\"><NetworkConnect onmatch=\"exclude\">\
             <DestinationPort condition=\"is\">53</DestinationPort>\
             <DestinationPort condition=\"is\">853</DestinationPort></NetworkConnect></RuleGroup>");
        assert_eq!(got, [ex(0, Side::Destination, 53), ex(0, Side::Destination, 853)].into());
    }
}
