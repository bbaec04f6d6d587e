//! Sessions from plain blocking code: no async, no runtime to build.
//!
//! Run with: `cargo run -p satchel --example blocking`

use satchel::{CookieChange, MemoryStore, Sessions};

fn main() -> Result<(), satchel::Error> {
    let sessions = Sessions::new(MemoryStore::new());

    let session = sessions.load_blocking(None)?;
    session.insert("wizard_step", 2)?;
    let CookieChange::Set { token, .. } = sessions.commit_blocking(&session)? else {
        unreachable!("a new session with data is stored and gets a cookie");
    };

    let again = sessions.load_blocking(Some(token))?;
    println!("wizard step: {:?}", again.get::<u32>("wizard_step")?);
    Ok(())
}
