//! Checks that a line is one well-formed Sysmon `<Event>` and reads it back.
//! Test support, shared by the unit tests and the integration tests.
#![allow(dead_code)] // each test crate uses a different part

use quick_xml::events::Event;
use quick_xml::Reader;

/// Parses `xml` as one XML document: the `<Data Name>` pairs and the text of
/// every other element, in order; panics if it is not well-formed or not one line.
pub fn parse_event(xml: &str) -> ParsedEvent {
    assert!(!xml.contains('\n') && !xml.contains('\r'), "not one line: {xml:?}");
    // quick-xml does not check the Char production: do it here.
    for c in xml.chars() {
        let ok = matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..);
        assert!(ok, "character {c:?} not allowed in XML 1.0: {xml:?}");
    }
    let mut reader = Reader::from_str(xml);
    let mut depth = 0usize;
    let mut roots = 0usize;
    let mut data: Vec<(String, String)> = Vec::new();
    let mut elements: Vec<(String, String)> = Vec::new();
    let mut current: Option<(String, String)> = None;
    loop {
        match reader.read_event().unwrap_or_else(|e| panic!("not well-formed ({e}): {xml}")) {
            Event::Start(e) => {
                if depth == 0 {
                    roots += 1;
                }
                depth += 1;
                if e.name().as_ref() != "Data" {
                    current = Some((e.name().as_ref().to_string(), String::new()));
                } else {
                    let name = e
                        .try_get_attribute("Name")
                        .expect("attribute")
                        .expect("Data has Name")
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .expect("attribute value")
                        .into_owned();
                    current = Some((name, String::new()));
                }
            }
            Event::End(e) => {
                depth = depth.checked_sub(1).expect("balanced");
                if let Some(pair) = current.take() {
                    if e.name().as_ref() == "Data" {
                        data.push(pair);
                    } else {
                        elements.push(pair);
                    }
                }
            }
            Event::Empty(_) => assert!(depth > 0, "empty element outside the root"),
            Event::Text(t) => {
                assert!(depth > 0, "text outside the root");
                if let Some((_, v)) = current.as_mut() {
                    v.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref().expect("char ref") {
                    Some(c) => c.to_string(),
                    None => quick_xml::escape::resolve_predefined_entity(&r.xml10_content())
                        .unwrap_or_else(|| panic!("undefined entity {r:?}"))
                        .to_string(),
                };
                if let Some((_, v)) = current.as_mut() {
                    v.push_str(&c);
                }
            }
            Event::Eof => break,
            other => panic!("unexpected {other:?} in {xml}"),
        }
    }
    assert_eq!((depth, roots), (0, 1), "one balanced root element");
    ParsedEvent { data, elements }
}

#[derive(Debug, Clone)]
pub struct ParsedEvent {
    /// `<Data Name="..">value</Data>`, in order.
    pub data: Vec<(String, String)>,
    /// Other elements with text (EventID, EventRecordID, Computer, ...).
    pub elements: Vec<(String, String)>,
}

impl ParsedEvent {
    pub fn data(&self, name: &str) -> Option<&str> {
        self.data.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn element(&self, name: &str) -> Option<&str> {
        self.elements.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}
