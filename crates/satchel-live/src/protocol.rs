//! The wire protocol: the JSON messages a browser and the server exchange over the socket.
//!
//! Every message is one JSON object in a text frame with `"v"` (the protocol version, [`VERSION`])
//! and `"t"` (its type). The crate README has the full table.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The protocol version this crate speaks.
pub const VERSION: u32 = 1;

/// Which of a browser session's storages a message is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// `window.localStorage`: one per browser session, shared by its tabs.
    Local,
    /// `window.sessionStorage`: one per tab.
    Session,
}

/// Where a client's copy of a storage stands: the storage lifetime (`epoch`) and the last
/// change it applied (`seq`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct Cursor {
    pub(crate) epoch: String,
    pub(crate) seq: u64,
}

/// A message from the browser.
#[derive(Debug, Deserialize)]
#[serde(tag = "t", rename_all = "lowercase", deny_unknown_fields)]
pub(crate) enum ClientMessage {
    Hello {
        v: u32,
        tab: String,
        #[serde(default)]
        local: Option<Cursor>,
        #[serde(default)]
        session: Option<Cursor>,
    },
    Set {
        v: u32,
        scope: Scope,
        key: String,
        value: String,
        #[serde(default, rename = "ref")]
        reference: Option<u64>,
    },
    Remove {
        v: u32,
        scope: Scope,
        key: String,
        #[serde(default, rename = "ref")]
        reference: Option<u64>,
    },
    Clear {
        v: u32,
        scope: Scope,
        #[serde(default, rename = "ref")]
        reference: Option<u64>,
    },
    Restore {
        v: u32,
        scope: Scope,
        items: BTreeMap<String, String>,
    },
}

impl ClientMessage {
    pub(crate) fn version(&self) -> u32 {
        match self {
            Self::Hello { v, .. }
            | Self::Set { v, .. }
            | Self::Remove { v, .. }
            | Self::Clear { v, .. }
            | Self::Restore { v, .. } => *v,
        }
    }
}

/// Just the version of a message that did not parse, to tell "too new" from "garbage".
#[derive(Deserialize)]
pub(crate) struct Envelope {
    pub(crate) v: Option<u32>,
}

/// One change to a storage, as sent in a `delta` message.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub(crate) enum Op<'a> {
    Set { key: &'a str, value: &'a str },
    Remove { key: &'a str },
    Clear,
}

/// A message from the server, borrowed for serialization.
#[derive(Debug, Serialize)]
#[serde(tag = "t", rename_all = "lowercase")]
pub(crate) enum ServerMessage<'a> {
    Snapshot {
        v: u32,
        scope: Scope,
        epoch: &'a str,
        seq: u64,
        items: &'a BTreeMap<String, String>,
    },
    Delta {
        v: u32,
        scope: Scope,
        seq: u64,
        #[serde(flatten)]
        op: Op<'a>,
    },
    Synced {
        v: u32,
        scope: Scope,
        epoch: &'a str,
        seq: u64,
    },
    Restore {
        v: u32,
        scope: Scope,
    },
    Tab {
        v: u32,
        tab: &'a str,
    },
    Ack {
        v: u32,
        #[serde(rename = "ref")]
        reference: u64,
        scope: Scope,
        seq: u64,
    },
    Error {
        v: u32,
        code: &'a str,
        message: &'a str,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        scope: Option<Scope>,
    },
}

impl ServerMessage<'_> {
    /// The message as JSON text. Serializing these types cannot fail (string keys, no custom
    /// serializers), so a failure is a bug: it is logged and an empty object is sent.
    pub(crate) fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|error| {
            tracing::error!(target: "satchel_live", %error, "cannot encode a server message");
            "{}".to_owned()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_is_flat() {
        let text = ServerMessage::Delta {
            v: VERSION,
            scope: Scope::Local,
            seq: 7,
            op: Op::Set {
                key: "k",
                value: "v",
            },
        }
        .encode();
        assert_eq!(
            text,
            r#"{"t":"delta","v":1,"scope":"local","seq":7,"op":"set","key":"k","value":"v"}"#
        );
    }

    #[test]
    fn hello_parses_with_and_without_cursors() {
        let hello: ClientMessage =
            serde_json::from_str(r#"{"v":1,"t":"hello","tab":"abc"}"#).expect("parses");
        assert!(matches!(hello, ClientMessage::Hello { local: None, .. }));
        let hello: ClientMessage = serde_json::from_str(
            r#"{"v":1,"t":"hello","tab":"abc","local":{"epoch":"e","seq":3}}"#,
        )
        .expect("parses");
        assert!(matches!(
            hello,
            ClientMessage::Hello {
                local: Some(Cursor { seq: 3, .. }),
                ..
            }
        ));
    }

    #[test]
    fn unknown_fields_and_types_are_rejected() {
        assert!(serde_json::from_str::<ClientMessage>(r#"{"v":1,"t":"nope"}"#).is_err());
        assert!(
            serde_json::from_str::<ClientMessage>(
                r#"{"v":1,"t":"clear","scope":"local","extra":1}"#
            )
            .is_err()
        );
        assert!(
            serde_json::from_str::<ClientMessage>(
                r#"{"v":1,"t":"set","scope":"local","key":"k","value":5}"#
            )
            .is_err()
        );
    }
}
