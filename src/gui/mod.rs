//! The browser GUI: embedded static assets served by the master on the GUI port (the
//! priority executor). The page drives the same JSON API as scripts (the browser sends
//! the Basic credentials it was asked for); nothing here reads the datastore or reaches
//! an agent.

/// The single page: client search, frontends, and a collection button.
pub const INDEX_HTML: &str = include_str!("index.html");
