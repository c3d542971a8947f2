//! The `Upload` scalar of the GraphQL multipart request spec: a file of the request,
//! named by the `map` part. async-graphql's own scalar panics on a reference a client
//! writes by hand (`"#__graphql_file__:x"`, or an index past the files sent); this one
//! refuses it as bad input.

use std::borrow::Cow;
use std::sync::Arc;

use async_graphql::registry::{MetaType, MetaTypeId, Registry};
use async_graphql::{Context, InputType, InputValueError, InputValueResult, UploadValue, Value};

use crate::error::{ApiError, Result};

/// How the multipart reader names a file in the variables it maps.
const FILE_REFERENCE: &str = "#__graphql_file__:";

/// A file of this request.
pub struct Upload(usize);

impl Upload {
    /// The file: its name, content type and content (spooled to a temporary file).
    pub fn value(&self, ctx: &Context<'_>) -> Result<UploadValue> {
        let file = ctx.query_env.uploads.get(self.0).ok_or_else(|| {
            ApiError::bad_input("no file: send it as a GraphQL multipart request, mapped to this variable")
        })?;
        file.try_clone().map_err(|e| ApiError::internal(anyhow::Error::new(e).context("an upload")))
    }
}

impl InputType for Upload {
    type RawValueType = Self;

    fn type_name() -> Cow<'static, str> {
        Cow::Borrowed("Upload")
    }

    fn create_type_info(registry: &mut Registry) -> String {
        registry.create_input_type::<Self, _>(MetaTypeId::Scalar, |_| MetaType::Scalar {
            name: Self::type_name().to_string(),
            description: Some("A file of a GraphQL multipart request".to_string()),
            is_valid: Some(Arc::new(|value| matches!(value, Value::String(_)))),
            visible: None,
            inaccessible: false,
            tags: Vec::new(),
            specified_by_url: Some("https://github.com/jaydenseric/graphql-multipart-request-spec".to_string()),
            directive_invocations: Vec::new(),
            requires_scopes: Vec::new(),
        })
    }

    fn parse(value: Option<Value>) -> InputValueResult<Self> {
        match &value {
            Some(Value::String(s)) => match s.strip_prefix(FILE_REFERENCE).and_then(|i| i.parse().ok()) {
                Some(index) => Ok(Upload(index)),
                None => Err(InputValueError::custom("a file is sent as a GraphQL multipart request")),
            },
            _ => Err(InputValueError::expected_type(value.unwrap_or_default())),
        }
    }

    fn to_value(&self) -> Value {
        Value::Null
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }
}
