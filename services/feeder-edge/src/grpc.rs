//! The `feeder.v1.Ingest` routes, written by hand instead of generated, for one reason:
//! the generated server builds its codec with `Default`, so it could not carry the edge's
//! limits into decoding. Here the codec holds them ([`crate::decode`]): a request is
//! refused the moment it passes a limit, instead of after prost decoded all of it.
//!
//! Routes and wire types are those of `proto/feeder/v1/ingest.proto`; devices see no
//! difference. Compressed requests are not accepted (tonic answers UNIMPLEMENTED), so no
//! decompression can amplify a request past its limit.

use std::convert::Infallible;
use std::sync::Arc;

use feeder_proto::v1::PushResponse;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::codegen::{Body, BoxFuture, Context, Poll, Service, StdError, http};
use tonic::server::{Grpc, NamedService, StreamingService, UnaryService};
use tonic::{Request, Response, Status, Streaming};

use crate::call::CallRefusal;
use crate::decode::{FrameLimits, PushFrames, decode_push_request};
use crate::service::{IngestService, ResponseStream};

/// The gRPC service name health is reported for (besides the server-wide "").
pub const INGEST_SERVICE_NAME: &str = "feeder.v1.Ingest";

/// Decodes requests within [`FrameLimits`]; encodes responses with prost.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    pub limits: FrameLimits,
}

#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    limits: FrameLimits,
}

impl Codec for FrameCodec {
    type Encode = PushResponse;
    type Decode = PushFrames;
    type Encoder = tonic_prost::ProstEncoder<PushResponse>;
    type Decoder = FrameDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        FrameDecoder {
            limits: self.limits,
        }
    }
}

impl Decoder for FrameDecoder {
    type Item = PushFrames;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<PushFrames>, Status> {
        decode_push_request(buf, self.limits)
            .map(Some)
            .map_err(|r| CallRefusal::from(r).into_status())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// The `Ingest` service as a tower service for tonic's router.
#[derive(Clone)]
pub struct IngestRouter {
    svc: Arc<IngestService>,
    codec: FrameCodec,
    max_request_bytes: usize,
}

impl IngestRouter {
    pub fn new(svc: IngestService, limits: FrameLimits, max_request_bytes: usize) -> Self {
        Self {
            svc: Arc::new(svc),
            codec: FrameCodec { limits },
            max_request_bytes,
        }
    }

    fn grpc(&self) -> Grpc<FrameCodec> {
        Grpc::new(self.codec).apply_max_message_size_config(Some(self.max_request_bytes), None)
    }
}

impl NamedService for IngestRouter {
    const NAME: &'static str = INGEST_SERVICE_NAME;
}

struct Push(Arc<IngestService>);

impl UnaryService<PushFrames> for Push {
    type Response = PushResponse;
    type Future = BoxFuture<Response<PushResponse>, Status>;

    fn call(&mut self, request: Request<PushFrames>) -> Self::Future {
        let svc = self.0.clone();
        Box::pin(async move { svc.push(request).await })
    }
}

struct PushStream(Arc<IngestService>);

impl StreamingService<PushFrames> for PushStream {
    type Response = PushResponse;
    type ResponseStream = ResponseStream;
    type Future = BoxFuture<Response<ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<PushFrames>>) -> Self::Future {
        let svc = self.0.clone();
        Box::pin(async move { svc.push_stream(request).await })
    }
}

impl<B> Service<http::Request<B>> for IngestRouter
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let mut grpc = self.grpc();
        let svc = self.svc.clone();
        let limit = self.max_request_bytes;
        match req.uri().path() {
            "/feeder.v1.Ingest/Push" => Box::pin(async move {
                let resp = grpc.unary(Push(svc), req).await;
                Ok(too_large_is_invalid_argument(resp, limit))
            }),
            "/feeder.v1.Ingest/PushStream" => Box::pin(async move {
                let resp = grpc.streaming(PushStream(svc), req).await;
                Ok(too_large_is_invalid_argument(resp, limit))
            }),
            _ => Box::pin(async move { Ok(Status::unimplemented("").into_http()) }),
        }
    }
}

/// tonic refuses a message longer than the decode limit from its header, with
/// OUT_OF_RANGE, before the service sees it. For a unary call that status is the whole
/// (trailers-only) response: it becomes the protocol's INVALID_ARGUMENT, and is counted.
/// (In a stream the same refusal reaches [`IngestService::push_stream`], which maps it.)
fn too_large_is_invalid_argument(
    mut resp: http::Response<tonic::body::Body>,
    limit: usize,
) -> http::Response<tonic::body::Body> {
    let out_of_range = resp
        .headers()
        .get(Status::GRPC_STATUS)
        .is_some_and(|v| v.as_bytes() == (tonic::Code::OutOfRange as i32).to_string().as_bytes());
    if out_of_range {
        let status = CallRefusal::TooLarge { limit }.into_status();
        let headers = resp.headers_mut();
        headers.remove(Status::GRPC_STATUS);
        headers.remove("grpc-message");
        // a fresh status's headers: grpc-status and the percent-encoded grpc-message
        if status.add_header(headers).is_err() {
            tracing::debug!("could not rewrite a too-large refusal");
        }
    }
    resp
}
