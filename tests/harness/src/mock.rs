//! The mock Gladia provider, started with the key the service will present, and the waits on
//! what it records.

use std::ops::Deref;
use std::time::Duration;

use mock_gladia::{MockConfig, MockGladia};

use crate::service::Service;

/// A running mock Gladia and the API key it accepts. Derefs to the mock, whose records the
/// tests read; stops when dropped.
pub struct MockProvider {
    mock: MockGladia,
    api_key: String,
}

impl MockProvider {
    /// Starts the mock with `config` (its own thread and actix System).
    pub fn start(config: MockConfig) -> anyhow::Result<MockProvider> {
        let api_key = config.api_key.clone();
        Ok(MockProvider {
            mock: MockGladia::start(config)?,
            api_key,
        })
    }

    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// The settings that point the service at this mock: `GLADIA_API_URL`, `GLADIA_API_KEY`.
    pub fn provider_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("GLADIA_API_URL", self.mock.base_url()),
            ("GLADIA_API_KEY", self.api_key.clone()),
        ]
    }

    /// [`MockProvider::provider_env`] and `DATABASE_URL`: what most tests start the service with.
    pub fn service_env(&self, database_url: &str) -> Vec<(&'static str, String)> {
        let mut env = self.provider_env();
        env.push(("DATABASE_URL", database_url.to_owned()));
        env
    }

    /// [`MockProvider::service_env`] followed by `extra` settings (which win over it).
    pub fn service_env_with(
        &self,
        database_url: &str,
        extra: &[(&'static str, &str)],
    ) -> Vec<(&'static str, String)> {
        let mut env = self.service_env(database_url);
        env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        env
    }

    /// Asserts that the only provider session ended the way a finished publish ends it: the
    /// service sent `stop_recording` and the mock closed with 1000 within `timeout`.
    pub async fn assert_one_session_closed(&self, service: &Service, timeout: Duration) {
        let ended = self
            .mock
            .wait_for(timeout, |s| s.len() == 1 && s[0].closed_with_1000)
            .await;
        assert!(
            ended,
            "provider session did not end cleanly; log:\n{}",
            service.log()
        );
    }
}

impl Deref for MockProvider {
    type Target = MockGladia;

    fn deref(&self) -> &MockGladia {
        &self.mock
    }
}

/// Starts the mock with its default configuration (API key `test-key`); panics if it cannot.
pub fn start_mock() -> MockProvider {
    start_mock_with(MockConfig::default())
}

/// Starts the mock with `config`; panics if it cannot.
pub fn start_mock_with(config: MockConfig) -> MockProvider {
    MockProvider::start(config).expect("mock starts")
}
