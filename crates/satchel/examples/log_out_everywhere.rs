//! "Log out everywhere": sessions carry an owner, and the store ends all of one owner's sessions.
//!
//! Run with: `cargo run -p satchel --example log_out_everywhere`

use std::sync::Arc;

use satchel::{CookieChange, MemoryStore, OwnerIndex, Sessions, Store};

#[tokio::main]
async fn main() -> Result<(), satchel::Error> {
    let store = Arc::new(MemoryStore::new());
    let sessions = Sessions::from_shared(Arc::clone(&store) as Arc<dyn Store>);

    // Alice logs in on two devices.
    let mut devices = Vec::new();
    for device in ["laptop", "phone"] {
        let session = sessions.load(None).await?;
        session.set_owner("alice");
        session.insert("device", device)?;
        if let CookieChange::Set { token, .. } = sessions.commit(&session).await? {
            devices.push(token);
        }
    }
    for (key, record) in store.list_by_owner("alice").await? {
        println!(
            "alice is logged in on {} (session {key})",
            record.data["device"]
        );
    }

    // She changes her password: end every session she has.
    let ended = store.delete_by_owner("alice").await?;
    println!("ended {ended} sessions");
    for token in devices {
        assert!(
            sessions.load(Some(token)).await?.is_empty(),
            "logged out everywhere"
        );
    }
    Ok(())
}
