//! Spans out: an OTLP JSON file (the `ExportTraceServiceRequest` of the OTLP/HTTP JSON
//! encoding, <https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding>: ids as hex,
//! one object per file) or OTLP/HTTP protobuf to a collector (`opentelemetry-otlp`'s span
//! exporter, over retrace's HTTP client).

use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};

/// Why spans could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The exporter could not be built (a malformed URL).
    #[error("OTLP endpoint {endpoint}: {what}")]
    Build {
        /// The URL.
        endpoint: String,
        /// What is wrong.
        what: String,
    },
    /// The collector could not be reached or refused the spans.
    #[error("sending spans to {endpoint}: {what}")]
    Export {
        /// The URL.
        endpoint: String,
        /// What happened.
        what: String,
    },
}

/// The resource every span is exported with: `service.name = retrace`, its version.
pub fn resource() -> Resource {
    Resource::builder_empty()
        .with_service_name("retrace")
        .with_attributes([KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))])
        .build()
}

/// `spans` as the OTLP JSON body a collector accepts on `POST /v1/traces`.
pub fn to_otlp_json(spans: Vec<SpanData>) -> serde_json::Value {
    let resource = ResourceAttributesWithSchema::from(&resource());
    let request = ExportTraceServiceRequest {
        resource_spans: group_spans_by_resource_and_scope(spans, &resource),
    };
    serde_json::to_value(&request).unwrap_or_default()
}

/// The traces URL of `endpoint`: a collector's OTLP/HTTP base (`http://host:4318`) gets
/// `/v1/traces`; a URL already ending in it is kept.
pub fn traces_url(endpoint: &str) -> String {
    let trimmed = endpoint.trim_end_matches('/');
    if trimmed.ends_with("/v1/traces") {
        trimmed.to_owned()
    } else {
        format!("{trimmed}/v1/traces")
    }
}

/// Send `spans` to the collector at `endpoint` as OTLP/HTTP protobuf.
///
/// # Errors
/// [`SendError`]: a malformed URL, an unreachable collector or a refusal (non-2xx).
pub async fn send(
    client: reqwest::Client,
    endpoint: &str,
    spans: Vec<SpanData>,
) -> Result<(), SendError> {
    let url = traces_url(endpoint);
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url.clone())
        .build()
        .map_err(|e| SendError::Build {
            endpoint: url.clone(),
            what: e.to_string(),
        })?;
    exporter.set_resource(&resource());
    exporter.export(spans).await.map_err(|e| SendError::Export {
        endpoint: url,
        what: e.to_string(),
    })
}
