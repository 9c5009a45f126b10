//! The browser GUI: static assets (HTML, ES modules, CSS) embedded in the binary and
//! served by the master on the GUI port (the priority executor). The app drives the same
//! JSON API as scripts; nothing here reads the datastore, reaches an agent or knows HTTP
//! (`api::assets` answers the requests).

pub mod assets;
