//! The connections to Redis: a reconnecting connection manager for one node,
//! or the async cluster connection, both opened on first use (inside the
//! runtime, never on the caller's thread), plus the clients a subscriber
//! connects with. Redis errors are kept inside this module tree: their texts
//! can quote addresses, and nothing here is logged.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSub};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Client, Cmd, ConnectionInfo, FromRedisValue, IntoConnectionInfo, Pipeline, RedisResult, TlsCertificates};
use tokio::sync::OnceCell;

use super::options::RedisOptions;

#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

pub(crate) struct Backend {
    /// `None` for a single node, which connects with the first client below.
    cluster: Option<redis::cluster::ClusterClient>,
    connection: OnceCell<Connection>,
    /// One per URI: a subscriber tries them in turn. In a cluster, PUBLISH
    /// reaches the subscribers of every node, so any node will do.
    subscriber_clients: Vec<Client>,
    timeout: Duration,
}

impl Backend {
    /// Builds the clients without connecting. The URIs were validated by
    /// [`RedisOptions`], so an error here is unexpected; its text is dropped.
    pub fn new(options: &RedisOptions) -> Result<Backend, &'static str> {
        let infos = options
            .uris
            .iter()
            .map(|uri| connection_info(uri.as_str(), options))
            .collect::<RedisResult<Vec<_>>>()
            .map_err(|_| "a Redis URI could not be parsed")?;
        let subscriber_clients = infos
            .iter()
            .map(|info| client(info.clone(), options))
            .collect::<RedisResult<Vec<_>>>()
            .map_err(|_| "a Redis client could not be built")?;
        let cluster = if options.cluster {
            let mut builder = ClusterClientBuilder::new(infos)
                .connection_timeout(options.timeout)
                .response_timeout(options.timeout)
                .retries(1);
            if let (Some(pem), true) = (&options.ca_pem, is_tls(options)) {
                builder = builder.certs(TlsCertificates { client_tls: None, root_cert: Some(pem.clone()) });
            }
            Some(builder.build().map_err(|_| "the Redis cluster client could not be built")?)
        } else {
            None
        };
        Ok(Backend { cluster, connection: OnceCell::new(), subscriber_clients, timeout: options.timeout })
    }

    async fn connection(&self) -> RedisResult<Connection> {
        self.connection
            .get_or_try_init(|| async {
                Ok(match &self.cluster {
                    None => {
                        // The tier's own budget bounds every call; the manager only has
                        // to keep reconnecting in the background.
                        let config = ConnectionManagerConfig::new()
                            .set_connection_timeout(Some(self.timeout))
                            .set_response_timeout(Some(self.timeout))
                            .set_number_of_retries(2)
                            .set_max_delay(Duration::from_secs(1));
                        Connection::Single(self.subscriber_clients[0].get_connection_manager_lazy(config)?)
                    }
                    Some(cluster) => Connection::Cluster(cluster.get_async_connection().await?),
                })
            })
            .await
            .cloned()
    }

    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        match self.connection().await? {
            Connection::Single(mut c) => cmd.query_async(&mut c).await,
            Connection::Cluster(mut c) => cmd.query_async(&mut c).await,
        }
    }

    pub async fn query_pipeline<T: FromRedisValue>(&self, pipeline: &Pipeline) -> RedisResult<T> {
        match self.connection().await? {
            Connection::Single(mut c) => pipeline.query_async(&mut c).await,
            Connection::Cluster(mut c) => pipeline.query_async(&mut c).await,
        }
    }

    /// A fresh subscriber connection to the first node that answers in time.
    pub async fn subscriber(&self) -> Option<PubSub> {
        for client in &self.subscriber_clients {
            if let Ok(Ok(pubsub)) = tokio::time::timeout(self.timeout, client.get_async_pubsub()).await {
                return Some(pubsub);
            }
        }
        None
    }
}

fn connection_info(uri: &str, options: &RedisOptions) -> RedisResult<ConnectionInfo> {
    let info = uri.into_connection_info()?;
    let mut settings = info.redis_settings().clone();
    if let Some(username) = &options.username {
        settings = settings.set_username(username);
    }
    if let Some(password) = &options.password {
        settings = settings.set_password(password);
    }
    Ok(info.set_redis_settings(settings))
}

fn client(info: ConnectionInfo, options: &RedisOptions) -> RedisResult<Client> {
    match &options.ca_pem {
        Some(pem) if is_tls(options) => {
            Client::build_with_tls(info, TlsCertificates { client_tls: None, root_cert: Some(pem.clone()) })
        }
        _ => Client::open(info),
    }
}

/// `redisCa` only matters for `rediss://` (all URIs share one scheme).
fn is_tls(options: &RedisOptions) -> bool {
    options.uris.iter().all(|uri| uri.starts_with("rediss://"))
}
