//! A Server-Sent Events test client: parses the raw stream as a browser would.

use anyhow::{Context, Result, bail};
use bytes::{Buf, BytesMut};
use exechub_protocol::Event;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use super::within;

/// One SSE message (comments are skipped).
#[derive(Debug, Default, Clone)]
pub struct SseMessage {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

pub struct SseClient {
    body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: BytesMut,
}

impl SseClient {
    /// Opens the stream and waits for the hub's `: subscribed` comment.
    /// `last_event_id` may be a bare seq (as older hubs sent) or `<epoch>-<seq>`.
    pub async fn connect(
        http: &reqwest::Client,
        url: &str,
        last_event_id: Option<impl ToString>,
    ) -> Result<Self> {
        let mut request = http.get(url).timeout(std::time::Duration::from_secs(3600));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = within("the SSE response", request.send()).await??;
        if response.status() != 200 {
            bail!(
                "stream answered {}: {}",
                response.status(),
                response.text().await?
            );
        }
        let mut client = Self {
            body: response.bytes_stream().boxed(),
            buffer: BytesMut::new(),
        };
        loop {
            let block = client.next_block().await?;
            if block.lines().any(|line| line == ": subscribed") {
                return Ok(client);
            }
        }
    }

    /// The next raw block (text up to a blank line), or an error at end of stream.
    async fn next_block(&mut self) -> Result<String> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block = self.buffer.split_to(end);
                self.buffer.advance(2);
                return Ok(String::from_utf8(block.to_vec())?);
            }
            match within("SSE data", self.body.next()).await? {
                Some(chunk) => self.buffer.extend_from_slice(&chunk?),
                None => bail!("SSE stream ended"),
            }
        }
    }

    /// The next message, skipping comment-only blocks; `None` when the stream ended.
    pub async fn next_message(&mut self) -> Result<Option<SseMessage>> {
        loop {
            let block = match self.next_block().await {
                Ok(block) => block,
                Err(error) if error.to_string() == "SSE stream ended" => return Ok(None),
                Err(error) => return Err(error),
            };
            let mut message = SseMessage::default();
            let mut has_data = false;
            for line in block.lines() {
                let (field, value) = line.split_once(": ").unwrap_or((line, ""));
                match field {
                    "id" => message.id = Some(value.to_owned()),
                    "event" => message.event = Some(value.to_owned()),
                    "data" => {
                        has_data = true;
                        message.data.push_str(value);
                    }
                    _ => {}
                }
            }
            if has_data {
                return Ok(Some(message));
            }
        }
    }

    /// The next event message, checking that its `id:` is `<epoch>-<seq>`.
    pub async fn next_event(&mut self) -> Result<Event> {
        let message = self.next_message().await?.context("stream ended")?;
        if message.event.is_some() {
            bail!("expected an event, got {message:?}");
        }
        let event: Event = serde_json::from_str(&message.data)?;
        let id = message.id.as_deref().unwrap_or_default();
        let epoch = id.strip_suffix(&format!("-{}", event.seq));
        if !epoch.is_some_and(exechub_protocol::is_epoch) {
            bail!("SSE id {id:?} is not <epoch>-{}", event.seq);
        }
        Ok(event)
    }
}
