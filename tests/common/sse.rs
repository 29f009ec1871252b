//! Reading `GET /v1/stream` as a client does: the text it has sent so far.

use std::time::Duration;

use futures_util::StreamExt;

type Body = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = reqwest::Result<actix_web::web::Bytes>> + Send>,
>;

/// What a stream has sent so far.
pub struct Sse {
    body: Body,
    pub text: String,
}

impl Sse {
    /// Opens `{address}/v1/stream` with `token`.
    pub async fn open(client: &reqwest::Client, address: &str, token: &str) -> Self {
        let response = client
            .get(format!("{address}/v1/stream"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Self {
            body: Box::pin(response.bytes_stream()),
            text: String::new(),
        }
    }

    /// Reads until the stream has shown `needle`, for at most 30 s.
    pub async fn read_until(&mut self, needle: &str) {
        let found = tokio::time::timeout(Duration::from_secs(30), async {
            while !self.text.contains(needle) {
                let chunk = self.body.next().await.unwrap().unwrap();
                self.text.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await;
        assert!(
            found.is_ok(),
            "the stream did not show {needle}: {}",
            self.text
        );
    }

    /// Reads until the server ends the stream; `false` if it is still open after `limit`.
    pub async fn ends_within(&mut self, limit: Duration) -> bool {
        tokio::time::timeout(limit, async {
            while let Some(Ok(chunk)) = self.body.next().await {
                self.text.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await
        .is_ok()
    }
}
