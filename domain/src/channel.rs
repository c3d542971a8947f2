//! A provider channel's settings: where the provider addresses an inbox (ids, kept in
//! the log in clear) and which secrets it needs (kept sealed outside the log; events
//! record only which of them changed).

use serde::{Deserialize, Serialize};

use crate::attachment::Attachment;
use crate::values::{Channel, FileType};
use crate::DomainError;

/// Longest provider id (phone number id, business account id, page id).
const MAX_PROVIDER_ID_CHARS: usize = 64;
/// Longest secret (access tokens run to a few hundred characters).
pub const MAX_SECRET_CHARS: usize = 4096;

/// Where a provider addresses an inbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "snake_case")]
pub enum ChannelAddress {
    Whatsapp {
        /// The number's id in the Cloud API: webhooks are routed by it, sends go to it.
        phone_number_id: String,
        /// The WhatsApp Business Account: message templates are listed under it.
        business_account_id: String,
    },
    Messenger {
        page_id: String,
        /// Human agents may answer up to 7 days after the user's last message (the
        /// `HUMAN_AGENT` tag, which Meta must have approved for the page).
        human_agent_tag: bool,
    },
}

impl ChannelAddress {
    pub fn channel(&self) -> Channel {
        match self {
            Self::Whatsapp { .. } => Channel::Whatsapp,
            Self::Messenger { .. } => Channel::Messenger,
        }
    }

    /// The id the provider's webhooks name the inbox by.
    pub fn routing_id(&self) -> &str {
        match self {
            Self::Whatsapp { phone_number_id, .. } => phone_number_id,
            Self::Messenger { page_id, .. } => page_id,
        }
    }

    /// How replies in the inbox are delivered, and for how long after the contact's
    /// last message they may be free-form: 24 hours, or 7 days on Messenger with the
    /// `HUMAN_AGENT` tag.
    pub fn delivery(&self) -> ProviderDelivery {
        let hours = match self {
            Self::Messenger { human_agent_tag: true, .. } => 7 * 24,
            _ => 24,
        };
        ProviderDelivery { channel: self.channel(), window: chrono::Duration::hours(hours) }
    }

    /// Checks the ids: digits, as Meta issues them.
    pub fn parse(self) -> Result<Self, DomainError> {
        let ids: Vec<(&str, &str)> = match &self {
            Self::Whatsapp { phone_number_id, business_account_id } => {
                vec![("phoneNumberId", phone_number_id), ("businessAccountId", business_account_id)]
            }
            Self::Messenger { page_id, .. } => vec![("pageId", page_id)],
        };
        for (field, id) in ids {
            if id.is_empty() || id.len() > MAX_PROVIDER_ID_CHARS || !id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(DomainError::invalid(format!(
                    "{field} must be the provider's numeric id (1 to {MAX_PROVIDER_ID_CHARS} digits)"
                )));
            }
        }
        Ok(self)
    }
}

/// A provider that delivers a conversation's replies, and how long after the
/// contact's last message it lets us answer with anything but a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderDelivery {
    pub channel: Channel,
    pub window: chrono::Duration,
}

impl ProviderDelivery {
    /// Checks that a reply is one message to the provider: at most one file (each
    /// provider sends a file per message), and text beside it only as a caption where
    /// the provider shows one (WhatsApp images, videos and documents; Messenger none).
    pub fn check_files(&self, attachments: &[Attachment], text: &str) -> Result<(), DomainError> {
        let [file] = attachments else {
            return match attachments.len() {
                0 => Ok(()),
                _ => Err(DomainError::invalid(format!(
                    "a {} reply carries one file: send each file as its own message",
                    self.channel.as_str()
                ))),
            };
        };
        let captioned = match self.channel {
            Channel::Whatsapp => matches!(file.file_type, FileType::Image | FileType::Video | FileType::File),
            _ => false,
        };
        if !text.is_empty() && !captioned {
            return Err(DomainError::invalid(format!(
                "{} does not show text with a file of this kind: send the text as its own message",
                self.channel.as_str()
            )));
        }
        Ok(())
    }
}

/// Longest template name Meta accepts.
const MAX_TEMPLATE_NAME_CHARS: usize = 512;
/// Largest `components` a template message may carry, serialised.
const MAX_TEMPLATE_COMPONENTS_BYTES: usize = 16 * 1024;

/// Which approved template a message is (WhatsApp): what may go out outside the
/// reply window. Its parameters travel apart, sealed (they may name the contact).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateRef {
    pub name: String,
    /// The template's language code (`en_US`, `pt_BR`).
    pub language: String,
}

impl TemplateRef {
    pub fn parse(name: &str, language: &str) -> Result<Self, DomainError> {
        let name_ok = !name.is_empty()
            && name.chars().count() <= MAX_TEMPLATE_NAME_CHARS
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !name_ok {
            return Err(DomainError::invalid("a template name is lower-case letters, digits and underscores"));
        }
        let language_ok = (2..=15).contains(&language.len())
            && language.chars().all(|c| c.is_ascii_alphabetic() || c == '_' || c == '-');
        if !language_ok {
            return Err(DomainError::invalid("a template language is a code such as en_US or pt_BR"));
        }
        Ok(Self { name: name.to_string(), language: language.to_string() })
    }

    /// Checks a template's components as given: the provider's array of objects, bounded.
    pub fn check_components(components: &serde_json::Value) -> Result<(), DomainError> {
        let is_array_of_objects = components.as_array().is_some_and(|items| items.iter().all(|c| c.is_object()));
        if !is_array_of_objects {
            return Err(DomainError::invalid("components must be an array of the provider's component objects"));
        }
        if components.to_string().len() > MAX_TEMPLATE_COMPONENTS_BYTES {
            return Err(DomainError::invalid(format!(
                "components are at most {MAX_TEMPLATE_COMPONENTS_BYTES} bytes serialised"
            )));
        }
        crate::values::storable("components", &components.to_string())
    }
}

/// A provider channel's secrets, by name. Their values never enter the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelSecret {
    /// WhatsApp: the system user's token the Cloud API is called with.
    AccessToken,
    /// Messenger: the page's token the Send API is called with.
    PageAccessToken,
    /// The app's secret: webhooks are signed with it.
    AppSecret,
    /// What the verify handshake must present.
    VerifyToken,
}

impl ChannelSecret {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AccessToken => "access_token",
            Self::PageAccessToken => "page_access_token",
            Self::AppSecret => "app_secret",
            Self::VerifyToken => "verify_token",
        }
    }

    const ALL: [ChannelSecret; 4] = [Self::AccessToken, Self::PageAccessToken, Self::AppSecret, Self::VerifyToken];

    /// The secrets a channel needs, all of them set when it is configured first.
    pub fn required(channel: Channel) -> &'static [ChannelSecret] {
        match channel {
            Channel::Whatsapp => &[Self::AccessToken, Self::AppSecret, Self::VerifyToken],
            Channel::Messenger => &[Self::PageAccessToken, Self::AppSecret, Self::VerifyToken],
            _ => &[],
        }
    }

    /// Checks a secret's value as given: not empty, bounded, one line.
    pub fn check(self, value: &str) -> Result<(), DomainError> {
        let chars = value.chars().count();
        if value.trim().is_empty() || chars > MAX_SECRET_CHARS || value.chars().any(char::is_control) {
            return Err(DomainError::invalid(format!(
                "{} must be 1 to {MAX_SECRET_CHARS} characters on one line",
                self.as_str()
            )));
        }
        Ok(())
    }
}

impl std::str::FromStr for ChannelSecret {
    type Err = DomainError;
    fn from_str(text: &str) -> Result<Self, DomainError> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| DomainError::invalid(format!("'{text}' is not a channel secret")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_ids_are_digits_and_secrets_one_bounded_line() {
        let address = |id: &str| ChannelAddress::Messenger { page_id: id.into(), human_agent_tag: false };
        assert!(address("106540352242922").parse().is_ok());
        for bad in ["", "12a", "1 2", &"9".repeat(65)] {
            assert!(address(bad).parse().is_err(), "{bad:?} accepted");
        }
        assert!(ChannelSecret::AppSecret.check("s3cr3t").is_ok());
        for bad in ["", "  ", "a\nb", &"x".repeat(MAX_SECRET_CHARS + 1)] {
            assert!(ChannelSecret::AppSecret.check(bad).is_err(), "{bad:?} accepted");
        }
    }
}
