//! `--token-file`: a bearer token read from a file and read again when the file changes (a
//! token agent rewriting it), the last good token kept when a read fails.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use secure_channel::jwt::{BearerToken, TokenProvider, TokenProviderError};

use crate::failure::Failure;

/// How often the file is looked at.
const POLL: Duration = Duration::from_secs(1);

/// The token of a file, followed while a handle exists.
#[derive(Clone)]
pub(crate) struct FileToken {
    current: Arc<RwLock<BearerToken>>,
}

impl FileToken {
    /// Reads the file (it must hold a token now) and follows it.
    pub(crate) fn start(path: &Path) -> Result<Self, Failure> {
        let (token, content) = read(path)
            .map_err(|e| Failure::invalid(format!("--token-file {}", path.display()), e))?;
        let current = Arc::new(RwLock::new(token));
        let weak = Arc::downgrade(&current);
        let path = path.to_path_buf();
        tokio::spawn(follow(path, content, weak));
        Ok(Self { current })
    }
}

fn read(path: &Path) -> Result<(BearerToken, String), String> {
    let content = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let token = BearerToken::new(&content).map_err(|e| e.to_string())?;
    Ok((token, content))
}

async fn follow(path: PathBuf, mut last: String, current: std::sync::Weak<RwLock<BearerToken>>) {
    let mut failing = false;
    loop {
        tokio::time::sleep(POLL).await;
        let Some(current) = current.upgrade() else {
            return;
        };
        match read(&path) {
            Ok((_, content)) if content == last => failing = false,
            Ok((token, content)) => {
                if let Ok(mut slot) = current.write() {
                    *slot = token;
                }
                last = content;
                failing = false;
                tracing::info!(file = %path.display(), "token file changed: new token in use");
            }
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(file = %path.display(), %error, "cannot read the token file; keeping the last token");
            }
            Err(_) => {}
        }
    }
}

impl TokenProvider for FileToken {
    fn token(
        &self,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<BearerToken, TokenProviderError>> + Send + '_>,
    > {
        let token = self
            .current
            .read()
            .map(|token| token.clone())
            .map_err(|_| TokenProviderError::from("the token file's reader failed"));
        Box::pin(std::future::ready(token))
    }
}
