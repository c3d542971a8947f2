//! What the store needs to know about an event beyond cqrs-es's `DomainEvent`.

use uuid::Uuid;

/// Which fields of an event hold personal data, and whose.
///
/// The store seals these fields with the data subject's key before the event reaches
/// the log, and opens them when it is read; erasing the contact shreds the key. Field
/// names are those of the event's variant object in its serialised form.
pub trait PersonalData {
    /// Names of the fields holding personal data (empty for most events).
    fn personal_fields(&self) -> &'static [&'static str] {
        &[]
    }
    /// The contact whose key seals those fields.
    fn data_subject(&self) -> Option<Uuid> {
        None
    }
}

/// Implements `cqrs_es::DomainEvent` for an externally tagged event enum: the event
/// type is the variant's name, the version is given per enum.
#[macro_export]
macro_rules! domain_event {
    ($enum:ty, version = $version:literal, [$($variant:ident),+ $(,)?]) => {
        impl cqrs_es::DomainEvent for $enum {
            fn event_type(&self) -> String {
                match self {
                    $(Self::$variant { .. } => stringify!($variant).to_string(),)+
                }
            }
            fn event_version(&self) -> String {
                $version.to_string()
            }
        }
    };
}
