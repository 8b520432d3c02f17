//! The mock's paths, named once for the REST side, the WebSocket side and the URLs it hands out.

pub const INIT_PATH: &str = "/v2/live";
pub const WS_PATH: &str = "/v2/live/ws";
