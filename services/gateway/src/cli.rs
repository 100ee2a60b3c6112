//! The gateway binary's command-line tools, beside serving: `token` mints a
//! development token, `watch` is a resuming command-line client of `/ws`, `admin` is
//! the operator CLI (`admin_*`: one file per command).
//!
//! Each subcommand owns its arguments (`clap::Args`) and the logic from arguments to
//! action, so `main.rs` stays a checklist.

pub mod admin;
mod admin_cursor;
mod admin_deliveries;
mod admin_erase;
mod admin_user;
pub mod token;
pub mod watch;
