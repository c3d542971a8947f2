//! The domain: aggregates, their commands and events, and the value types they are made
//! of. Pure: no I/O, no clock, no randomness — time and ids arrive inside commands, so
//! every rule is tested exactly with given/when/then.

pub mod account;
pub mod activity;
pub mod actor;
pub mod attachment;
pub mod availability;
pub mod channel;
pub mod contact;
pub mod conversation;
pub mod error;
pub mod event;
pub mod ids;
pub mod inbox;
pub mod label;
pub mod notification;
pub mod public_event;
pub mod route;
pub mod team;
pub mod upcast;
pub mod user;
pub mod values;
pub mod webhook;

pub use error::DomainError;
pub use event::PersonalData;
