//! Labels: one stream per title per account, so a title cannot be defined twice.

use domain::ids::AccountId;
use domain::label::{Label, LabelCommand, LabelTitle};
use domain::DomainError;
use uuid::Uuid;

use crate::context::CommandContext;
use crate::{CommandError, Commands, Written};

/// Namespace of label ids (uuid v5 of account + title).
const LABEL_NAMESPACE: Uuid = Uuid::from_u128(0x6c61_6265_6c73_4e53_8000_0000_0000_0001);

impl Commands {
    pub async fn create_label(
        &self,
        context: &CommandContext,
        title: &str,
        color: &str,
    ) -> Result<(Uuid, Written), CommandError> {
        let title = LabelTitle::parse(title)?;
        let color = parse_color(color)?;
        let id = Uuid::new_v5(&LABEL_NAMESPACE, format!("{}/{}", context.account_id, title.as_str()).as_bytes());
        let account_id = AccountId(context.account_id);
        let written = self
            .execute::<Label>(context, &id.to_string(), |_| {
                Ok(LabelCommand::Create { account_id, title: title.clone(), color: color.clone(), at: context.at })
            })
            .await?;
        Ok((id, written))
    }

    pub async fn delete_label(&self, context: &CommandContext, label_id: Uuid) -> Result<Written, CommandError> {
        self.execute::<Label>(context, &label_id.to_string(), |label| {
            match label.account_id() {
                Some(owner) if owner.as_uuid() == context.account_id => {}
                _ => return Err(DomainError::NotFound("label").into()),
            }
            Ok(LabelCommand::Delete { at: context.at })
        })
        .await
    }
}

/// A colour as `#rrggbb`.
fn parse_color(color: &str) -> Result<String, DomainError> {
    let valid = color.len() == 7 && color.starts_with('#') && color[1..].chars().all(|c| c.is_ascii_hexdigit());
    if valid {
        Ok(color.to_lowercase())
    } else {
        Err(DomainError::invalid(format!("colour '{color}' must look like #1f93ff")))
    }
}
