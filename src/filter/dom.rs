//! A small element tree read with quick-xml, each part with the byte offset it
//! starts at, so that the rule checks that follow can point at the line and
//! column of what they reject.

use quick_xml::events::attributes::AttrError;
use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

#[derive(Debug)]
pub struct Element {
    pub name: String,
    /// Offset of the `<` that opens the element.
    pub offset: usize,
    pub attributes: Vec<Attribute>,
    pub children: Vec<Node>,
}

#[derive(Debug)]
pub struct Attribute {
    pub name: String,
    /// With entities resolved and whitespace normalized, as XML defines.
    pub value: String,
    pub offset: usize,
}

#[derive(Debug)]
pub enum Node {
    Element(Element),
    /// Character data: adjacent text, CDATA and references joined.
    Text {
        text: String,
        offset: usize,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub struct XmlError {
    pub offset: usize,
    pub message: String,
}

impl Element {
    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|attribute| attribute.name == name)
    }

    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|node| match node {
            Node::Element(element) => Some(element),
            Node::Text { .. } => None,
        })
    }

    /// The element's character data and where it starts (the element itself when
    /// it has none).
    pub fn text(&self) -> (String, usize) {
        let mut text = String::new();
        let mut offset = None;
        for node in &self.children {
            if let Node::Text { text: part, offset: part_offset } = node {
                text.push_str(part);
                offset.get_or_insert(*part_offset);
            }
        }
        (text, offset.unwrap_or(self.offset))
    }
}

/// The deepest nesting a document may have. A Sysmon config nests six
/// deep (`Sysmon/EventFiltering/RuleGroup/NetworkConnect/Rule/field`);
/// a bound keeps a hostile file from costing stack (the tree's drop and
/// every walk of it recurse).
pub const MAX_DEPTH: usize = 32;

/// Parses a whole document into its root element.
pub fn parse_document(source: &str) -> Result<Element, XmlError> {
    let mut reader = Reader::from_str(source);
    let mut open: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;

    loop {
        let offset = position(reader.buffer_position());
        let event = reader
            .read_event()
            .map_err(|error| XmlError { offset: position(reader.error_position()), message: error.to_string() })?;
        match event {
            Event::Start(start) => {
                if root.is_some() && open.is_empty() {
                    return Err(second_root(&start, offset));
                }
                if open.len() >= MAX_DEPTH {
                    return Err(XmlError {
                        offset,
                        message: format!("elements nested deeper than {MAX_DEPTH} levels (a Sysmon config has six)"),
                    });
                }
                open.push(element(source, &start, offset)?);
            }
            Event::Empty(start) => {
                let element = element(source, &start, offset)?;
                attach(&mut open, &mut root, element)?;
            }
            Event::End(_) => {
                // quick-xml has already checked that the end tag closes the open element.
                if let Some(element) = open.pop() {
                    attach(&mut open, &mut root, element)?;
                }
            }
            Event::Text(text) => add_text(&mut open, &text.xml10_content(), offset)?,
            Event::CData(data) => add_text(&mut open, &data.xml10_content(), offset)?,
            Event::GeneralRef(reference) => {
                let resolved = match reference.resolve_char_ref() {
                    Ok(Some(character)) => character.to_string(),
                    Ok(None) => match predefined_entity(&reference) {
                        Some(text) => text.to_string(),
                        None => {
                            return Err(XmlError {
                                offset,
                                message: format!(
                                    "unknown entity `&{};` (only the five predefined ones exist)",
                                    &*reference
                                ),
                            })
                        }
                    },
                    Err(error) => return Err(XmlError { offset, message: error.to_string() }),
                };
                add_text(&mut open, &resolved, offset)?;
            }
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
            Event::Eof => break,
        }
    }

    if let Some(unclosed) = open.last() {
        return Err(XmlError {
            offset: unclosed.offset,
            message: format!("<{}> is never closed (the file ends first)", unclosed.name),
        });
    }
    root.ok_or(XmlError { offset: source.len(), message: "no root element".to_string() })
}

fn position(offset: u64) -> usize {
    usize::try_from(offset).unwrap_or(usize::MAX)
}

fn second_root(start: &BytesStart<'_>, offset: usize) -> XmlError {
    XmlError { offset, message: format!("a second root element <{}> after the first one closed", start.name().0) }
}

fn predefined_entity(name: &str) -> Option<&'static str> {
    match name {
        "lt" => Some("<"),
        "gt" => Some(">"),
        "amp" => Some("&"),
        "apos" => Some("'"),
        "quot" => Some("\""),
        _ => None,
    }
}

fn element(source: &str, start: &BytesStart<'_>, offset: usize) -> Result<Element, XmlError> {
    let mut attributes = Vec::new();
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|error| attribute_error(offset, &error))?;
        let name = attribute.key.0;
        let attribute_offset = offset_in(source, name).unwrap_or(offset);
        let value = attribute
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|error| XmlError { offset: attribute_offset, message: error.to_string() })?;
        attributes.push(Attribute { name: name.to_string(), value: value.into_owned(), offset: attribute_offset });
    }
    Ok(Element { name: start.name().0.to_string(), offset, attributes, children: Vec::new() })
}

/// quick-xml counts attribute positions from the element name, just after `<`.
fn attribute_error(element_offset: usize, error: &AttrError) -> XmlError {
    let (position, message) = match error {
        AttrError::ExpectedEq(position) => (position, "an attribute name must be followed by `=`".to_string()),
        AttrError::ExpectedValue(position) => (position, "`=` must be followed by a value in quotes".to_string()),
        AttrError::UnquotedValue(position) => (position, "attribute values must be in quotes".to_string()),
        AttrError::ExpectedQuote(position, quote) => {
            (position, format!("the attribute value has no closing `{}`", char::from(*quote)))
        }
        AttrError::Duplicated(position, _) => (position, "duplicated attribute".to_string()),
    };
    XmlError { offset: element_offset + 1 + position, message }
}

/// Where `part`, a slice quick-xml borrowed from `source`, starts in it.
fn offset_in(source: &str, part: &str) -> Option<usize> {
    let start = source.as_ptr() as usize;
    let part_start = part.as_ptr() as usize;
    (part_start >= start && part_start + part.len() <= start + source.len()).then(|| part_start - start)
}

fn attach(open: &mut [Element], root: &mut Option<Element>, element: Element) -> Result<(), XmlError> {
    if let Some(parent) = open.last_mut() {
        parent.children.push(Node::Element(element));
        return Ok(());
    }
    if root.is_some() {
        return Err(XmlError {
            offset: element.offset,
            message: format!("a second root element <{}> after the first one closed", element.name),
        });
    }
    *root = Some(element);
    Ok(())
}

fn add_text(open: &mut [Element], text: &str, offset: usize) -> Result<(), XmlError> {
    let Some(parent) = open.last_mut() else {
        if text.trim().is_empty() {
            return Ok(());
        }
        return Err(XmlError { offset, message: "text outside the root element".to_string() });
    };
    if let Some(Node::Text { text: previous, .. }) = parent.children.last_mut() {
        previous.push_str(text);
    } else {
        parent.children.push(Node::Text { text: text.to_string(), offset });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_tree_with_offsets() {
        let source = "<a x=\"1\">\n  <b y='&lt;2'>t&amp;u<![CDATA[<v>]]>&#x41;</b><c/></a>";
        let root = parse_document(source).expect("parses");
        assert_eq!(root.name, "a");
        assert_eq!(root.offset, 0);
        assert_eq!(root.attribute("x").map(|a| (a.value.as_str(), a.offset)), Some(("1", 3)));
        let children: Vec<&Element> = root.elements().collect();
        assert_eq!(children.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["b", "c"]);
        let b = children[0];
        assert_eq!(b.offset, 12);
        assert_eq!(b.attribute("y").map(|a| (a.value.as_str(), a.offset)), Some(("<2", 15)));
        assert_eq!(b.text(), ("t&u<v>A".to_string(), 25));
        assert_eq!(children[1].text(), (String::new(), children[1].offset));
    }

    #[test]
    fn keeps_whitespace_of_text() {
        let root = parse_document("<a> x\r\n </a>").expect("parses");
        assert_eq!(root.text().0, " x\n ");
    }

    #[test]
    fn rejects_malformed_documents_with_their_position() {
        let cases: &[(&str, usize, &str)] = &[
            ("<a><b></a>", 6, "</a>"),
            ("<a>\n<b>", 4, "never closed"),
            ("", 0, "no root"),
            ("<a/><b/>", 4, "second root"),
            ("<a/>text", 4, "outside the root"),
            ("<a>&nbsp;</a>", 3, "unknown entity"),
            ("<a x='1' x='2'/>", 9, "duplicated attribute"),
            ("<a\n x=1/>", 6, "in quotes"),
            ("<a x/>", 4, "followed by `=`"),
        ];
        for &(source, offset, fragment) in cases {
            let error = parse_document(source).expect_err(source);
            assert_eq!(error.offset, offset, "{source:?}: {error:?}");
            assert!(error.message.contains(fragment), "{source:?}: {error:?}");
        }
    }
}
