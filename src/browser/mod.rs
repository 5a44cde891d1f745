//! Finding, launching and addressing browsers.
//!
//! This module owns the life of a locally launched Chromium ([`Launch`] starts one, the
//! full browser or the headless shell as [`BrowserKind`] says;
//! [`LaunchedBrowser`] stops it) and the parsing and resolution of remote DevTools
//! addresses ([`Endpoint`]: `ws(s)://`, or `http(s)://` looked up at `/json/version`,
//! with headers, TLS trust and a page capacity). It speaks no CDP: it only produces a
//! `ws://` or `wss://` URL (and its headers) for the transport to connect to.
//!
//! What it must never do:
//! - bind or ask Chromium to bind the DevTools port beyond 127.0.0.1;
//! - leave a browser process, a process of its group or a zombie behind: every launched
//!   browser runs in its own process group, which is killed and reaped on
//!   [`LaunchedBrowser::shutdown`], on drop, and on every failed or cancelled launch;
//! - leave a temporary profile directory behind (it holds cookies and caches): ours are
//!   removed on shutdown and drop, and those of a killed process at the next launch;
//! - outlive this process (Linux: the parent-death signal, see `spawner`);
//! - turn Chromium's sandbox off silently or where it could work (see [`Sandbox`]).

mod endpoint;
mod flags;
mod json_version;
mod kind;
mod launch;
mod port_file;
mod process;
mod profile;
mod sandbox;
mod spawner;

pub use endpoint::Endpoint;
pub use kind::BrowserKind;
pub use launch::{Launch, LaunchedBrowser};
pub use sandbox::Sandbox;

pub use crate::remote::client_config as tls_client_config;
/// The TLS crate [`Endpoint::tls_config`] takes a configuration of (re-exported so the
/// versions match).
pub use rustls;
