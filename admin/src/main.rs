//! `thruster-admin`: mqadmin's everyday commands, for Thruster and for Apache RocketMQ (it
//! speaks only the remoting protocol both serve). mqadmin's flag names where they exist
//! (`-n -t -g -b -c -k -v -i -s`), a table on the terminal, `--json` for scripts, and errors
//! that say what to do.

mod cluster;
mod consumer_status;
mod group;
mod message;
mod namesrv;
mod output;
mod remote;
mod stats;
mod topic;

use clap::{Args, Parser, Subcommand};

/// What went wrong, said so that the operator knows what to do next.
#[derive(Debug)]
pub struct AdminError(pub String);

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<thruster_protocol::body::BodyError> for AdminError {
    fn from(error: thruster_protocol::body::BodyError) -> AdminError {
        AdminError(format!("unexpected answer: {error}"))
    }
}

impl From<thruster_protocol::HeaderError> for AdminError {
    fn from(error: thruster_protocol::HeaderError) -> AdminError {
        AdminError(format!("unexpected answer header: {error}"))
    }
}

#[derive(Parser)]
#[command(
    name = "thruster-admin",
    version,
    about = "Administer Thruster / RocketMQ clusters"
)]
struct Cli {
    /// Name server address(es), `host:port;host:port` (or NAMESRV_ADDR).
    #[arg(short = 'n', long = "namesrvAddr", global = true, env = "NAMESRV_ADDR")]
    namesrv: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// ACL account for brokers with `aclEnable` (or THRUSTER_ACCESS_KEY); every request is
    /// signed with it, as mqadmin signs with conf/tools.yml's keys.
    #[arg(long = "accessKey", global = true, env = "THRUSTER_ACCESS_KEY")]
    access_key: Option<String>,
    /// The account's secret (or THRUSTER_SECRET_KEY, which keeps it out of `ps`).
    #[arg(
        long = "secretKey",
        global = true,
        env = "THRUSTER_SECRET_KEY",
        hide_env_values = true
    )]
    secret_key: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// Where a broker command goes: one broker (`-b`) or every master of a cluster (`-c`).
#[derive(Args, Clone, Debug)]
pub struct Target {
    /// Broker address `host:port`.
    #[arg(short = 'b', long = "brokerAddr")]
    pub broker: Option<String>,
    /// Cluster name: every master broker of it.
    #[arg(short = 'c', long = "clusterName")]
    pub cluster: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Brokers of every cluster with their TPS, totals and disk use.
    #[command(name = "clusterList")]
    ClusterList {
        #[arg(short = 'c', long = "clusterName")]
        cluster: Option<String>,
    },
    /// Every topic the name servers know.
    #[command(name = "topicList")]
    TopicList,
    /// A topic's route (brokers and queues) as the name server gives it.
    #[command(name = "topicRoute")]
    TopicRoute {
        #[arg(short = 't', long = "topic")]
        topic: String,
    },
    /// A topic's queues: min/max offsets and last update, on every broker.
    #[command(name = "topicStatus")]
    TopicStatus {
        #[arg(short = 't', long = "topic")]
        topic: String,
    },
    /// Create or change a topic.
    #[command(name = "updateTopic")]
    UpdateTopic {
        #[command(flatten)]
        target: Target,
        #[arg(short = 't', long = "topic")]
        topic: String,
        #[arg(short = 'r', long = "readQueueNums", default_value_t = 8)]
        read_queues: i32,
        #[arg(short = 'w', long = "writeQueueNums", default_value_t = 8)]
        write_queues: i32,
        /// Permission: 2 write, 4 read, 6 both.
        #[arg(short = 'p', long = "perm", default_value_t = 6)]
        perm: i32,
        #[arg(short = 'o', long = "order", default_value_t = false)]
        order: bool,
    },
    /// Delete a topic from a cluster's brokers and the name servers.
    #[command(name = "deleteTopic")]
    DeleteTopic {
        #[arg(short = 'c', long = "clusterName")]
        cluster: String,
        #[arg(short = 't', long = "topic")]
        topic: String,
    },
    /// Delete the ConsumeQueues of topics a broker no longer has (what a crash can leave).
    #[command(name = "cleanUnusedTopic")]
    CleanUnusedTopic {
        #[command(flatten)]
        target: Target,
    },
    /// Create or change a subscription group.
    #[command(name = "updateSubGroup")]
    UpdateSubGroup {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        settings: group::GroupSettings,
    },
    /// Delete a subscription group.
    #[command(name = "deleteSubGroup")]
    DeleteSubGroup {
        #[command(flatten)]
        target: Target,
        #[arg(short = 'g', long = "groupName")]
        group: String,
        /// Also forget the group's committed offsets.
        #[arg(short = 'r', long = "removeOffset", default_value_t = false)]
        remove_offset: bool,
    },
    /// A consumer group's progress: broker and consumer offsets and lag per queue.
    #[command(name = "consumerProgress")]
    ConsumerProgress {
        #[arg(short = 'g', long = "groupName")]
        group: String,
        #[arg(short = 't', long = "topicName")]
        topic: Option<String>,
    },
    /// A consumer group's connections and subscriptions.
    #[command(name = "consumerConnection")]
    ConsumerConnection {
        #[arg(short = 'g', long = "consumerGroup")]
        group: String,
    },
    /// What a group's consumers report of themselves: subscriptions, queues held with their
    /// offsets and buffers, pull/consume rates (asked of each consumer through a broker).
    #[command(name = "consumerStatus")]
    ConsumerStatus {
        #[arg(short = 'g', long = "consumerGroup")]
        group: String,
        /// One consumer's full report (else a line per consumer).
        #[arg(short = 'i', long = "clientId")]
        client_id: Option<String>,
        /// Ask through this broker (default: the group's first).
        #[arg(short = 'b', long = "brokerAddr")]
        broker: Option<String>,
        /// Include the consumer's task dump (mqadmin's jstack).
        #[arg(short = 's', long = "jstack", default_value_t = false)]
        jstack: bool,
    },
    /// A producer group's connections (on the brokers of a topic).
    #[command(name = "producerConnection")]
    ProducerConnection {
        #[arg(short = 'g', long = "producerGroup")]
        group: String,
        #[arg(short = 't', long = "topic")]
        topic: String,
    },
    /// A message by its offset message id.
    #[command(name = "queryMsgById")]
    QueryMsgById {
        #[arg(short = 'i', long = "msgId")]
        msg_id: String,
    },
    /// Messages by key.
    #[command(name = "queryMsgByKey")]
    QueryMsgByKey {
        #[arg(short = 't', long = "topic")]
        topic: String,
        #[arg(short = 'k', long = "msgKey")]
        key: String,
    },
    /// A message by its unique (client) id.
    #[command(name = "queryMsgByUniqueKey")]
    QueryMsgByUniqueKey {
        #[arg(short = 't', long = "topic")]
        topic: String,
        #[arg(short = 'i', long = "msgId")]
        msg_id: String,
    },
    /// Move a group's offsets in a topic to a time (ms, `now`, or yyyy-MM-dd#HH:mm:ss:SSS).
    #[command(name = "resetOffsetByTime")]
    ResetOffsetByTime {
        #[arg(short = 'g', long = "group")]
        group: String,
        #[arg(short = 't', long = "topic")]
        topic: String,
        #[arg(short = 's', long = "timestamp")]
        timestamp: String,
        /// Also move offsets forward (default, as mqadmin).
        #[arg(short = 'f', long = "force", default_value_t = true, action = clap::ArgAction::Set)]
        force: bool,
    },
    /// Per topic and consumer group: backlog, TPS in and out (last minute), messages in and out
    /// (last day), from the brokers' stats items.
    #[command(name = "statsAll")]
    StatsAll {
        /// Only topics with traffic in the last day.
        #[arg(short = 'a', long = "activeTopic", default_value_t = false)]
        active: bool,
        #[arg(short = 't', long = "topic")]
        topic: Option<String>,
    },
    /// A broker's runtime information.
    #[command(name = "brokerStatus")]
    BrokerStatus {
        #[command(flatten)]
        target: Target,
    },
    /// A broker's configuration.
    #[command(name = "getBrokerConfig")]
    GetBrokerConfig {
        #[command(flatten)]
        target: Target,
    },
    /// Change one broker configuration key.
    #[command(name = "updateBrokerConfig")]
    UpdateBrokerConfig {
        #[command(flatten)]
        target: Target,
        #[arg(short = 'k', long = "key")]
        key: String,
        #[arg(short = 'v', long = "value")]
        value: String,
    },
}

fn run(cli: Cli) -> Result<output::Output, AdminError> {
    match (cli.access_key, cli.secret_key) {
        (Some(access_key), Some(secret_key)) => remote::sign_with(
            thruster_protocol::acl::SessionCredentials::new(access_key, secret_key),
        ),
        (None, None) => {}
        _ => {
            return Err(AdminError(
                "--accessKey and --secretKey go together (an ACL account has both)".into(),
            ))
        }
    }
    let ns = namesrv::NameServers::new(cli.namesrv.as_deref());
    match cli.command {
        Command::ClusterList { cluster } => cluster::cluster_list(&ns?, cluster.as_deref()),
        Command::TopicList => topic::topic_list(&ns?),
        Command::TopicRoute { topic } => topic::topic_route(&ns?, &topic),
        Command::TopicStatus { topic } => topic::topic_status(&ns?, &topic),
        Command::UpdateTopic {
            target,
            topic,
            read_queues,
            write_queues,
            perm,
            order,
        } => topic::update_topic(
            &ns,
            &target,
            &topic::TopicSettings {
                topic,
                read_queues,
                write_queues,
                perm,
                order,
            },
        ),
        Command::DeleteTopic { cluster, topic } => topic::delete_topic(&ns?, &cluster, &topic),
        Command::CleanUnusedTopic { target } => topic::clean_unused_topic(&ns, &target),
        Command::UpdateSubGroup { target, settings } => {
            group::update_sub_group(&ns, &target, &settings)
        }
        Command::DeleteSubGroup {
            target,
            group,
            remove_offset,
        } => group::delete_sub_group(&ns, &target, &group, remove_offset),
        Command::ConsumerProgress { group, topic } => {
            group::consumer_progress(&ns?, &group, topic.as_deref())
        }
        Command::ConsumerConnection { group } => group::consumer_connection(&ns?, &group),
        Command::ConsumerStatus {
            group,
            client_id,
            broker,
            jstack,
        } => consumer_status::consumer_status(
            &ns?,
            &consumer_status::StatusQuery {
                group: &group,
                client_id: client_id.as_deref(),
                broker: broker.as_deref(),
                jstack,
            },
        ),
        Command::ProducerConnection { group, topic } => {
            group::producer_connection(&ns?, &group, &topic)
        }
        Command::QueryMsgById { msg_id } => message::by_id(&msg_id),
        Command::QueryMsgByKey { topic, key } => message::by_key(&ns?, &topic, &key, false),
        Command::QueryMsgByUniqueKey { topic, msg_id } => {
            message::by_key(&ns?, &topic, &msg_id, true)
        }
        Command::ResetOffsetByTime {
            group,
            topic,
            timestamp,
            force,
        } => group::reset_offset_by_time(&ns?, &group, &topic, &timestamp, force),
        Command::StatsAll { active, topic } => stats::stats_all(&ns?, topic.as_deref(), active),
        Command::BrokerStatus { target } => cluster::broker_status(&ns, &target),
        Command::GetBrokerConfig { target } => cluster::get_broker_config(&ns, &target),
        Command::UpdateBrokerConfig { target, key, value } => {
            cluster::update_broker_config(&ns, &target, &key, &value)
        }
    }
}

fn main() {
    let cli = Cli::parse();
    let json = cli.json;
    match run(cli) {
        Ok(out) if json => println!(
            "{}",
            serde_json::to_string_pretty(&out.json).expect("JSON values print")
        ),
        Ok(out) => print!("{}", out.text),
        Err(error) => {
            eprintln!("thruster-admin: {error}");
            std::process::exit(1);
        }
    }
}
