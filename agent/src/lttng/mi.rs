//! Parsing what `lttng --mi xml` reports (schema `lttng-mi` 4.x).

use roxmltree::{Document, Node};
pub use tracecar_api::lttng::{Discarded, Tracepoint, TracepointField};

/// The XML could not be read.
#[derive(Debug, thiserror::Error)]
#[error("lttng printed XML that cannot be parsed: {0}")]
pub struct MiError(#[from] roxmltree::Error);

fn child<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

fn children<'a, 'i>(node: Node<'a, 'i>, name: &'a str) -> impl Iterator<Item = Node<'a, 'i>> {
    node.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == name)
}

fn text<'a>(node: Node<'a, '_>, name: &str) -> Option<&'a str> {
    child(node, name).and_then(|n| n.text())
}

/// Follows a path of child element names.
fn path<'a, 'i>(mut node: Node<'a, 'i>, names: &[&str]) -> Option<Node<'a, 'i>> {
    for name in names {
        node = child(node, name)?;
    }
    Some(node)
}

/// Whether the command says it succeeded (`<command><success>`). A command
/// without the element (such as `list`) succeeded when it printed output.
pub fn succeeded(xml: &str) -> Result<bool, MiError> {
    let doc = Document::parse(xml)?;
    let root = doc.root_element();
    Ok(match text(root, "success") {
        Some(s) => s == "true",
        None => child(root, "output").is_some_and(|o| o.has_children()),
    })
}

/// Session names from `lttng list`.
pub fn session_names(xml: &str) -> Result<Vec<String>, MiError> {
    let doc = Document::parse(xml)?;
    Ok(path(doc.root_element(), &["output", "sessions"])
        .map(|sessions| {
            children(sessions, "session")
                .filter_map(|s| text(s, "name"))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default())
}

/// The closed chunk's directory from `lttng rotate` (`<rotation><location>
/// <local><absolute_path>`); `None` if the rotation did not complete or
/// wrote elsewhere than locally.
pub fn rotated_chunk(xml: &str) -> Result<Option<std::path::PathBuf>, MiError> {
    let doc = Document::parse(xml)?;
    let Some(rotation) = path(doc.root_element(), &["output", "rotation"]) else {
        return Ok(None);
    };
    if text(rotation, "state") != Some("COMPLETED") {
        return Ok(None);
    }
    Ok(path(rotation, &["location", "local", "absolute_path"])
        .and_then(|n| n.text())
        .map(std::path::PathBuf::from))
}

/// The counters from `lttng list SESSION`.
pub fn discarded(xml: &str) -> Result<Discarded, MiError> {
    let doc = Document::parse(xml)?;
    let mut total = Discarded::default();
    let channels = doc
        .descendants()
        .filter(|n| n.is_element() && n.tag_name().name() == "channel");
    for channel in channels {
        let Some(attributes) = child(channel, "attributes") else {
            continue;
        };
        let count = |name| {
            text(attributes, name)
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(0)
        };
        total.discarded_events += count("discarded_events");
        total.lost_packets += count("lost_packets");
    }
    Ok(total)
}

/// The tracepoints from `lttng list -u -f`.
pub fn tracepoints(xml: &str) -> Result<Vec<Tracepoint>, MiError> {
    let doc = Document::parse(xml)?;
    let mut found = Vec::new();
    let pids = doc
        .descendants()
        .filter(|n| n.is_element() && n.tag_name().name() == "pid");
    for process in pids {
        let Some(pid) = text(process, "id").and_then(|p| p.parse().ok()) else {
            continue;
        };
        let procname = text(process, "name").unwrap_or_default();
        let Some(events) = child(process, "events") else {
            continue;
        };
        for event in children(events, "event") {
            let fields = child(event, "event_fields")
                .map(|f| {
                    children(f, "event_field")
                        .map(|field| TracepointField {
                            name: text(field, "name").unwrap_or_default().to_owned(),
                            kind: text(field, "type").unwrap_or_default().to_owned(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            found.push(Tracepoint {
                event: text(event, "name").unwrap_or_default().to_owned(),
                loglevel: text(event, "loglevel").unwrap_or_default().to_owned(),
                fields,
                pid,
                procname: procname.to_owned(),
            });
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_names_its_chunk() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<command><name>rotate</name><output><rotation><session_name>s</session_name><state>COMPLETED</state><location><local><absolute_path>/t/s/archives/20261206T054850+0000-20261206T054850+0000-0</absolute_path></local></location></rotation></output><success>true</success></command>"#;
        assert_eq!(
            rotated_chunk(xml).unwrap(),
            Some(std::path::PathBuf::from(
                "/t/s/archives/20261206T054850+0000-20261206T054850+0000-0"
            ))
        );
        let pending = xml.replace("COMPLETED", "STARTED");
        assert_eq!(rotated_chunk(&pending).unwrap(), None);
        assert_eq!(
            rotated_chunk("<command><success>true</success></command>").unwrap(),
            None
        );
    }

    const HEAD: &str = r#"<?xml version="1.0" encoding="UTF-8"?><command xmlns="https://lttng.org/xml/ns/lttng-mi" schemaVersion="4.1">"#;

    fn doc(body: &str) -> String {
        format!("{HEAD}{body}</command>")
    }

    #[test]
    fn success_is_read_from_the_command() {
        let ok = doc("<name>start</name><output><sessions/></output><success>true</success>");
        let failed =
            doc("<name>enable-event</name><output><events/></output><success>false</success>");
        let no_daemon = doc("<name>list</name><output/>");
        let listed = doc("<name>list</name><output><sessions/></output>");
        assert!(succeeded(&ok).expect("xml"));
        assert!(!succeeded(&failed).expect("xml"));
        assert!(!succeeded(&no_daemon).expect("xml"));
        assert!(succeeded(&listed).expect("xml"));
        assert!(succeeded("not xml").is_err());
    }

    #[test]
    fn sessions_and_loss_counters() {
        let list = doc(
            "<name>list</name><output><sessions><session><name>tracecar-1-1</name><path>/t</path></session><session><name>other</name></session></sessions></output>",
        );
        assert_eq!(
            session_names(&list).expect("xml"),
            ["tracecar-1-1", "other"]
        );
        let one = doc(
            "<name>list</name><output><sessions><session><name>s</name><domains><domain><type>UST</type><channels>\
             <channel><name>a</name><attributes><discarded_events>12</discarded_events><lost_packets>1</lost_packets></attributes></channel>\
             <channel><name>b</name><attributes><discarded_events>3</discarded_events><lost_packets>0</lost_packets></attributes></channel>\
             </channels></domain></domains></session></sessions></output>",
        );
        assert_eq!(
            discarded(&one).expect("xml"),
            Discarded {
                discarded_events: 15,
                lost_packets: 1
            }
        );
    }

    #[test]
    fn tracepoints_with_fields_and_their_processes() {
        let list = doc(
            "<name>list</name><output><domains><domain><type>UST</type><buffer_type>PER_PID</buffer_type><pids>\
             <pid><id>3826</id><name>./app</name><events>\
             <event><name>app:tick</name><type>TRACEPOINT</type><enabled>true</enabled><loglevel>TRACE_INFO</loglevel><loglevel_type>ALL</loglevel_type><exclusions/>\
             <event_fields><event_field><name>msg</name><type>STRING</type><nowrite>0</nowrite></event_field><event_field><name>seq</name><type>INTEGER</type><nowrite>0</nowrite></event_field></event_fields></event>\
             <event><name>lttng_ust_lib:load</name><type>TRACEPOINT</type><loglevel>TRACE_DEBUG_LINE</loglevel></event>\
             </events></pid></pids></domain></domains></output>",
        );
        let found = tracepoints(&list).expect("xml");
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].event, "app:tick");
        assert_eq!(found[0].pid, 3826);
        assert_eq!(found[0].procname, "./app");
        assert_eq!(found[0].loglevel, "TRACE_INFO");
        assert_eq!(
            found[0].fields,
            [
                TracepointField {
                    name: "msg".into(),
                    kind: "STRING".into()
                },
                TracepointField {
                    name: "seq".into(),
                    kind: "INTEGER".into()
                }
            ]
        );
        assert!(found[1].fields.is_empty());
        assert!(
            tracepoints(&doc("<name>list</name><output/>"))
                .expect("xml")
                .is_empty()
        );
    }
}
