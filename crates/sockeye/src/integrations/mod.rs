//! Integrations with HTTP servers: upgrades received by hyper 1.x (feature `hyper`) and an axum
//! 0.8 extractor (feature `axum`).

#[cfg(feature = "axum")]
pub mod axum;
#[cfg(feature = "hyper")]
pub mod hyper;
