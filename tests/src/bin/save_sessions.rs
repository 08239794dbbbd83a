//! Saves session `crash` in DIR over and over, alternating two versions, for the crash test
//! (`tests/integration/sessions.rs` kills it at random points). Prints `saved N` after each.

use std::io::Write;

use corral::sessions::SessionStore;
use corral_tests::crash_session;

fn main() {
    let dir = std::env::args().nth(1).expect("usage: save_sessions DIR");
    let store = SessionStore::at(dir);
    let versions = [crash_session(0), crash_session(1)];
    let mut out = std::io::stdout();
    for n in 0.. {
        let mut session = versions[n % 2].clone();
        store.save(&mut session).expect("save");
        let _ = writeln!(out, "saved {n}");
        let _ = out.flush();
    }
}
