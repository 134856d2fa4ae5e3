//! The CLI's commands and output. Human output by default, `--json` for
//! scripts. Exit codes: 0 success, 1 verify found a difference, 2 error.

mod render;

use std::io::IsTerminal;

use clap::{Args, Parser, Subcommand};
use cutover_proto::v1 as pb;
use cutover_telemetry::{TraceParent, TraceParentService};
use pb::orchestrator_client::OrchestratorClient;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

#[derive(Parser, Debug)]
#[command(
    name = "cutover",
    version,
    about = "Migrate Kafka topics between clusters with identical offsets"
)]
pub struct Cli {
    /// Orchestrator gRPC endpoint.
    #[arg(
        long,
        global = true,
        env = "CUTOVER_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    /// Machine-readable output (JSON).
    #[arg(long, global = true)]
    pub json: bool,
    /// Make this command one trace: every request carries a new W3C trace
    /// context, and `trace_id=<hex>` is printed on stderr (find it in Jaeger).
    #[arg(long, global = true, env = "CUTOVER_TRACE")]
    pub trace: bool,
    /// Join this W3C trace context instead of starting a trace (e.g. a CI
    /// pipeline's); sent also without --trace. An invalid value is ignored
    /// with a warning.
    #[arg(long, global = true, env = "TRACEPARENT", hide_env_values = true)]
    pub traceparent: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Links: named (source, target) cluster pairs.
    #[command(subcommand)]
    Link(LinkCmd),
    /// Mirror topics over a link.
    #[command(subcommand)]
    Mirror(MirrorCmd),
    /// Mirror groups: consumer groups whose home moves with the routers.
    #[command(subcommand)]
    Group(GroupCmd),
    /// Progress per topic and partition.
    Status(StatusArgs),
    /// Compare source and target record by record.
    Verify(VerifyArgs),
    /// Move the primary of mirror topics to the target, in one barrier:
    /// writes through the routers wait (never fail) and go on to the target.
    Promote(PromoteArgs),
    /// Move the primary of promoted topics back to the source.
    Rollback(PromoteArgs),
    /// End the reverse mirror of promoted topics once the source can go
    /// (no rollback after it); refused while clients write to the source.
    Detach {
        #[command(flatten)]
        selection: Selection,
        /// How long the source is watched for writers other than the
        /// reverse mirror (default 2000).
        #[arg(long, default_value_t = 0)]
        watch_ms: u32,
    },
    /// Promotions and rollbacks of a link, newest first, with their steps.
    Promotions {
        #[arg(long)]
        link: String,
    },
}

#[derive(Args, Debug)]
pub struct PromoteArgs {
    #[arg(long)]
    pub link: String,
    /// The topics to move together (transactions across them stay whole).
    #[arg(required_unless_present = "groups")]
    pub topics: Vec<String>,
    /// Mirror groups to move in the same barrier (repeatable): their
    /// members rebalance once and go on at their commits on the other
    /// cluster. Alone, it moves only the groups.
    #[arg(long = "group")]
    pub groups: Vec<String>,
    /// How long the old primary must take no write while the routers hold
    /// them (default 100); part of the produce stall.
    #[arg(long, default_value_t = 0)]
    pub quiet_ms: u32,
    /// Longest wait for the fetchers to copy the last records (default 10000).
    #[arg(long, default_value_t = 0)]
    pub drain_timeout_ms: u32,
    /// Longest wait for open transactions on the topics to end (default 5000).
    #[arg(long, default_value_t = 0)]
    pub transaction_wait_ms: u32,
    /// Longest wait for the groups' members to rejoin (default 30000).
    #[arg(long, default_value_t = 0)]
    pub rejoin_timeout_ms: u32,
    /// Compare the topics record by record first (`cutover verify`); any
    /// difference refuses the promotion, with nothing changed.
    #[arg(long)]
    pub verify: bool,
}

#[derive(Subcommand, Debug)]
pub enum LinkCmd {
    Create {
        name: String,
        /// Source bootstrap servers, comma separated.
        #[arg(long, value_delimiter = ',', required = true)]
        source: Vec<String>,
        /// Target bootstrap servers, comma separated.
        #[arg(long, value_delimiter = ',', required = true)]
        target: Vec<String>,
        /// Bytes per second for the whole link (0 = unlimited).
        #[arg(long, default_value_t = 0)]
        bandwidth_limit: u64,
        /// A source client property, `key=value` with Kafka's names
        /// (`security.protocol=SASL_SSL`, `sasl.password.file=/run/pw`);
        /// repeatable. Secrets only by file or variable (README, Secured
        /// clusters).
        #[arg(long = "source-property", value_parser = parse_property)]
        source_properties: Vec<(String, String)>,
        /// A target client property, as --source-property.
        #[arg(long = "target-property", value_parser = parse_property)]
        target_properties: Vec<(String, String)>,
        /// A properties file (`key=value` lines, `#` comments, as Kafka's
        /// `--command-config`) for the source; --source-property wins.
        #[arg(long)]
        source_config: Option<std::path::PathBuf>,
        /// A properties file for the target, as --source-config.
        #[arg(long)]
        target_config: Option<std::path::PathBuf>,
    },
    Get {
        name: String,
    },
    List,
    Delete {
        name: String,
    },
}

#[derive(Args, Debug)]
pub struct Selection {
    #[arg(long)]
    pub link: String,
    /// Mirror topics to act on.
    pub topics: Vec<String>,
    /// Every mirror topic of the link.
    #[arg(long, conflicts_with = "topics")]
    pub all: bool,
}

#[derive(Subcommand, Debug)]
pub enum MirrorCmd {
    Add {
        #[arg(long)]
        link: String,
        /// Topic names.
        topics: Vec<String>,
        /// Regex matched against whole source topic names (repeatable).
        #[arg(long = "include")]
        include: Vec<String>,
        /// Skip topics matching this regex (repeatable).
        #[arg(long = "exclude")]
        exclude: Vec<String>,
        /// Show what would be mirrored; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    List {
        #[arg(long)]
        link: String,
    },
    Pause(Selection),
    Resume(Selection),
    Remove(RemoveArgs),
}

#[derive(Args, Debug)]
pub struct RemoveArgs {
    #[command(flatten)]
    pub selection: Selection,
    /// Also topics whose primary is the target (PROMOTED, DETACHED): their
    /// clients behind the routers would go back to the source, so only
    /// once no client uses the routers any more.
    #[arg(long)]
    pub force: bool,
}

#[derive(Subcommand, Debug)]
pub enum GroupCmd {
    /// Register consumer groups of the source (by name or regex).
    Add {
        #[arg(long)]
        link: String,
        /// Group ids.
        groups: Vec<String>,
        /// Regex matched against whole source group ids (repeatable).
        #[arg(long = "include")]
        include: Vec<String>,
        /// Skip groups matching this regex (repeatable).
        #[arg(long = "exclude")]
        exclude: Vec<String>,
        /// Promote only when asked (`cutover promote --group`), not as soon
        /// as every member comes through the routers.
        #[arg(long)]
        manual: bool,
        /// Show what would be registered; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    List {
        #[arg(long)]
        link: String,
    },
    /// Copy the committed offsets of groups that move without the routers
    /// (stopped on the source, started on the target directly) to the
    /// target, unchanged; each must be empty on the target.
    Sync {
        #[arg(long)]
        link: String,
        #[arg(required = true)]
        groups: Vec<String>,
        /// Copy what is committed now although members still consume on
        /// the source (their later commits are not copied).
        #[arg(long)]
        allow_active: bool,
        /// Check and show what would be copied; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Unregister groups at home on the source.
    Remove {
        #[arg(long)]
        link: String,
        groups: Vec<String>,
        /// Every mirror group of the link.
        #[arg(long, conflicts_with = "groups")]
        all: bool,
    },
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Without it: every link, one summary line per mirror topic.
    #[arg(long)]
    pub link: Option<String>,
    /// Topics of the link (default: all of them).
    #[arg(requires = "link")]
    pub topics: Vec<String>,
    /// Keep refreshing until interrupted (or until in sync with --until-in-sync).
    #[arg(long, requires = "link")]
    pub watch: bool,
    /// With --watch: stop once every partition is in sync.
    #[arg(long, requires = "watch")]
    pub until_in_sync: bool,
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u32,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[arg(long)]
    pub link: String,
    /// The mirror topic to check (default: every mirror topic of the link).
    #[arg(long)]
    pub topic: Option<String>,
    /// Partitions to check (repeatable; default all).
    #[arg(long = "partition")]
    pub partitions: Vec<i32>,
    #[arg(long)]
    pub from: Option<i64>,
    #[arg(long)]
    pub to: Option<i64>,
    /// At most this many records per partition (0 = all).
    #[arg(long, default_value_t = 0)]
    pub max_records: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot reach the orchestrator at {server}: {cause}. Is it running? Set --server or CUTOVER_SERVER.")]
    Connect { server: String, cause: String },
    #[error("{}", .0.message())]
    Api(#[from] tonic::Status),
    #[error("{0}")]
    Output(String),
    #[error("cannot read the properties file {}: {source}", .path.display())]
    PropertiesFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {text:?} is not key=value", .path.display())]
    PropertiesLine {
        path: std::path::PathBuf,
        line: usize,
        text: String,
    },
    #[error("link {link} mirrors no topic: nothing to verify (add some with `cutover mirror add --link {link} TOPIC`)")]
    NoMirrors { link: String },
}

/// The trace context every request of this command carries, if any, and a
/// warning for stderr when a given `traceparent` was unusable. A broken
/// context never fails the command: tracing must not stop an operation.
fn trace_context(cli: &Cli) -> (Option<TraceParent>, Option<String>) {
    let joined = cli.traceparent.as_deref().filter(|s| !s.trim().is_empty());
    match joined.map(TraceParent::parse) {
        Some(Ok(tp)) => (Some(tp), None),
        Some(Err(e)) => {
            let fallback = if cli.trace {
                "starting a new trace"
            } else {
                "not tracing"
            };
            (
                cli.trace.then(TraceParent::new_root),
                Some(format!(
                    "warning: ignoring --traceparent/TRACEPARENT ({e}); {fallback}"
                )),
            )
        }
        None => (cli.trace.then(TraceParent::new_root), None),
    }
}

/// Runs the command, prints its result, returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    let (trace, warning) = trace_context(&cli);
    if let Some(w) = warning {
        eprintln!("{w}");
    }
    if let (true, Some(tp)) = (cli.trace, &trace) {
        // Printed before the first request, so a failing or endless
        // (`status --watch`) command can be looked up too.
        eprintln!("trace_id={}", tp.trace_id());
    }
    match execute(&cli, trace.as_ref()).await {
        Ok(code) => code,
        Err(e) => {
            if cli.json {
                let code = match &e {
                    CliError::Api(s) => format!("{:?}", s.code()),
                    CliError::Connect { .. } => "Unavailable".into(),
                    CliError::Output(_) => "Internal".into(),
                    CliError::NoMirrors { .. } => "FailedPrecondition".into(),
                    CliError::PropertiesFile { .. } | CliError::PropertiesLine { .. } => {
                        "InvalidArgument".into()
                    }
                };
                println!(
                    "{}",
                    serde_json::json!({"error": e.to_string(), "code": code})
                );
            } else {
                eprintln!("error: {e}");
            }
            2
        }
    }
}

type Client = OrchestratorClient<TraceParentService<Channel>>;

async fn client(server: &str, trace: Option<&TraceParent>) -> Result<Client, CliError> {
    let endpoint = Channel::from_shared(server.to_string())
        .map_err(|e| CliError::Connect {
            server: server.into(),
            cause: e.to_string(),
        })?
        .connect_timeout(std::time::Duration::from_secs(5));
    let channel = endpoint.connect().await.map_err(|e| CliError::Connect {
        server: server.into(),
        cause: format!("{e}"),
    })?;
    let layer = trace.map(TraceParent::layer).unwrap_or_default();
    Ok(OrchestratorClient::new(
        tower::ServiceBuilder::new().layer(layer).service(channel),
    ))
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<(), CliError> {
    let s = serde_json::to_string_pretty(v).map_err(|e| CliError::Output(e.to_string()))?;
    println!("{s}");
    Ok(())
}

fn cluster(servers: &[String]) -> pb::ClusterSpec {
    pb::ClusterSpec {
        bootstrap_servers: servers.to_vec(),
        properties: Default::default(),
    }
}

/// `key=value` of --source-property / --target-property.
fn parse_property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!("{s:?} is not key=value")),
    }
}

/// The lines of a Java-style properties file: `key=value`, blank lines
/// and `#` or `!` comments skipped.
fn parse_properties_file(
    path: &std::path::Path,
    text: &str,
) -> Result<Vec<(String, String)>, CliError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with('!') {
            continue;
        }
        out.push(parse_property(t).map_err(|_| CliError::PropertiesLine {
            path: path.to_owned(),
            line: i + 1,
            text: t.to_owned(),
        })?);
    }
    Ok(out)
}

/// A cluster's properties: the file's, then the flags' over them.
fn properties(
    file: Option<&std::path::Path>,
    flags: &[(String, String)],
) -> Result<std::collections::HashMap<String, String>, CliError> {
    let mut props = std::collections::HashMap::new();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| CliError::PropertiesFile {
            path: path.to_owned(),
            source,
        })?;
        props.extend(parse_properties_file(path, &text)?);
    }
    props.extend(flags.iter().cloned());
    Ok(props)
}

async fn execute(cli: &Cli, trace: Option<&TraceParent>) -> Result<i32, CliError> {
    let mut c = client(&cli.server, trace).await?;
    let json = cli.json;
    match &cli.command {
        Command::Link(LinkCmd::Create {
            name,
            source,
            target,
            bandwidth_limit,
            source_properties,
            target_properties,
            source_config,
            target_config,
        }) => {
            let mut source = cluster(source);
            source.properties = properties(source_config.as_deref(), source_properties)?;
            let mut target = cluster(target);
            target.properties = properties(target_config.as_deref(), target_properties)?;
            let l = c
                .create_link(pb::CreateLinkRequest {
                    name: name.clone(),
                    source: Some(source),
                    target: Some(target),
                    options: Some(pb::LinkOptions {
                        bandwidth_limit_bytes_per_sec: *bandwidth_limit,
                    }),
                })
                .await?
                .into_inner();
            if json {
                print_json(&render::link_json(&l))?
            } else {
                println!("created link {}", render::link_line(&l))
            }
        }
        Command::Link(LinkCmd::Get { name }) => {
            let l = c
                .get_link(pb::GetLinkRequest { name: name.clone() })
                .await?
                .into_inner();
            if json {
                print_json(&render::link_json(&l))?
            } else {
                println!("{}", render::link_line(&l))
            }
        }
        Command::Link(LinkCmd::List) => {
            let ls = c
                .list_links(pb::ListLinksRequest {})
                .await?
                .into_inner()
                .links;
            if json {
                print_json(&ls.iter().map(render::link_json).collect::<Vec<_>>())?
            } else if ls.is_empty() {
                println!("no links; create one with `cutover link create NAME --source HOST:PORT --target HOST:PORT`");
            } else {
                ls.iter().for_each(|l| println!("{}", render::link_line(l)));
            }
        }
        Command::Link(LinkCmd::Delete { name }) => {
            c.delete_link(pb::DeleteLinkRequest { name: name.clone() })
                .await?;
            if json {
                print_json(&serde_json::json!({"deleted": name}))?
            } else {
                println!("deleted link {name}")
            }
        }
        Command::Mirror(MirrorCmd::Add {
            link,
            topics,
            include,
            exclude,
            dry_run,
        }) => {
            let r = c
                .add_mirrors(pb::AddMirrorsRequest {
                    link: link.clone(),
                    topics: topics.clone(),
                    include_regex: include.clone(),
                    exclude_regex: exclude.clone(),
                    dry_run: *dry_run,
                })
                .await?
                .into_inner();
            if json {
                print_json(
                    &serde_json::json!({"dry_run": r.dry_run, "mirrors": r.added.iter().map(render::mirror_json).collect::<Vec<_>>()}),
                )?
            } else {
                let verb = if r.dry_run {
                    "would mirror"
                } else {
                    "mirroring"
                };
                for m in &r.added {
                    println!("{verb} {} ({} partitions)", m.topic, m.partitions);
                }
            }
        }
        Command::Mirror(MirrorCmd::List { link }) => {
            let ms = c
                .list_mirrors(pb::ListMirrorsRequest { link: link.clone() })
                .await?
                .into_inner()
                .mirrors;
            if json {
                print_json(&ms.iter().map(render::mirror_json).collect::<Vec<_>>())?
            } else {
                ms.iter()
                    .for_each(|m| println!("{}", render::mirror_line(m)));
            }
        }
        Command::Mirror(MirrorCmd::Pause(s))
        | Command::Mirror(MirrorCmd::Resume(s))
        | Command::Mirror(MirrorCmd::Remove(RemoveArgs { selection: s, .. })) => {
            let force = matches!(
                &cli.command,
                Command::Mirror(MirrorCmd::Remove(RemoveArgs { force: true, .. }))
            );
            let sel = pb::MirrorSelection {
                link: s.link.clone(),
                topics: s.topics.clone(),
                all: s.all,
                force,
            };
            let (verb, r) = match &cli.command {
                Command::Mirror(MirrorCmd::Pause(_)) => ("paused", c.pause_mirrors(sel).await?),
                Command::Mirror(MirrorCmd::Resume(_)) => ("resumed", c.resume_mirrors(sel).await?),
                _ => ("removed", c.remove_mirrors(sel).await?),
            };
            let ms = r.into_inner().mirrors;
            if json {
                print_json(
                    &serde_json::json!({verb: ms.iter().map(|m| m.topic.clone()).collect::<Vec<_>>()}),
                )?
            } else {
                ms.iter().for_each(|m| println!("{verb} {}", m.topic));
            }
        }
        Command::Group(GroupCmd::Add {
            link,
            groups,
            include,
            exclude,
            manual,
            dry_run,
        }) => {
            let r = c
                .add_groups(pb::AddGroupsRequest {
                    link: link.clone(),
                    groups: groups.clone(),
                    include_regex: include.clone(),
                    exclude_regex: exclude.clone(),
                    manual: *manual,
                    dry_run: *dry_run,
                })
                .await?
                .into_inner();
            if json {
                print_json(
                    &serde_json::json!({"dry_run": r.dry_run, "groups": r.added.iter().map(render::group_json).collect::<Vec<_>>()}),
                )?
            } else {
                let verb = if r.dry_run { "would add" } else { "added" };
                for g in &r.added {
                    println!("{verb} {}", render::group_line(g));
                }
            }
        }
        Command::Group(GroupCmd::List { link }) => {
            let gs = c
                .list_groups(pb::ListGroupsRequest { link: link.clone() })
                .await?
                .into_inner()
                .groups;
            if json {
                print_json(&gs.iter().map(render::group_json).collect::<Vec<_>>())?
            } else if gs.is_empty() {
                println!("no mirror groups on link {link}; add some with `cutover group add --link {link} GROUP`");
            } else {
                gs.iter()
                    .for_each(|g| println!("{}", render::group_line(g)));
            }
        }
        Command::Group(GroupCmd::Sync {
            link,
            groups,
            allow_active,
            dry_run,
        }) => {
            let r = c
                .sync_group_offsets(pb::SyncGroupOffsetsRequest {
                    link: link.clone(),
                    groups: groups.clone(),
                    allow_active: *allow_active,
                    dry_run: *dry_run,
                })
                .await?
                .into_inner();
            if json {
                print_json(&serde_json::json!({
                    "dry_run": r.dry_run,
                    "groups": r.groups.iter().map(|g| serde_json::json!({
                        "group": g.group,
                        "partitions": g.partitions,
                        "source_members": g.source_members,
                    })).collect::<Vec<_>>(),
                }))?
            } else {
                let verb = if r.dry_run { "would copy" } else { "copied" };
                for g in &r.groups {
                    let active = if g.source_members.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " (members still on the source: {})",
                            g.source_members.join(", ")
                        )
                    };
                    println!(
                        "{verb} the commits of group {} to the target: {} partitions{active}",
                        g.group, g.partitions
                    );
                }
            }
        }
        Command::Group(GroupCmd::Remove { link, groups, all }) => {
            let gs = c
                .remove_groups(pb::GroupSelection {
                    link: link.clone(),
                    groups: groups.clone(),
                    all: *all,
                })
                .await?
                .into_inner()
                .groups;
            if json {
                print_json(
                    &serde_json::json!({"removed": gs.iter().map(|g| g.group.clone()).collect::<Vec<_>>()}),
                )?
            } else {
                gs.iter().for_each(|g| println!("removed {}", g.group));
            }
        }
        Command::Status(a) => {
            let Some(link) = &a.link else {
                // Every link: one summary line per mirror topic.
                let links = c
                    .list_links(pb::ListLinksRequest {})
                    .await?
                    .into_inner()
                    .links;
                let mut statuses = Vec::with_capacity(links.len());
                for l in &links {
                    let req = pb::StatusRequest {
                        link: l.name.clone(),
                        topics: Vec::new(),
                    };
                    statuses.push(c.get_status(req).await?.into_inner());
                }
                if json {
                    print_json(&render::summary_json(&statuses))?
                } else {
                    print!("{}", render::summary_text(&statuses))
                }
                return Ok(0);
            };
            let req = pb::StatusRequest {
                link: link.clone(),
                topics: a.topics.clone(),
            };
            if !a.watch {
                let s = c.get_status(req).await?.into_inner();
                if json {
                    print_json(&render::status_json(&s))?
                } else {
                    print!("{}", render::status_text(&s))
                }
            } else {
                let mut stream = c
                    .watch_status(pb::WatchStatusRequest {
                        request: Some(req),
                        interval_ms: a.interval_ms,
                    })
                    .await?
                    .into_inner();
                let tty = std::io::stdout().is_terminal() && !json;
                while let Some(item) = stream.next().await {
                    let s = item?;
                    if json {
                        println!(
                            "{}",
                            serde_json::to_string(&render::status_json(&s))
                                .map_err(|e| CliError::Output(e.to_string()))?
                        );
                    } else {
                        if tty {
                            // Redraw in place.
                            print!("\x1b[2J\x1b[H");
                        }
                        print!("{}", render::status_text(&s));
                        if !tty {
                            println!();
                        }
                    }
                    if a.until_in_sync && render::all_in_sync(&s) {
                        break;
                    }
                }
            }
        }
        Command::Verify(a) => {
            let topics = match &a.topic {
                Some(t) => vec![t.clone()],
                // Every mirror topic of the link, one after the other.
                None => c
                    .list_mirrors(pb::ListMirrorsRequest {
                        link: a.link.clone(),
                    })
                    .await?
                    .into_inner()
                    .mirrors
                    .into_iter()
                    .map(|m| m.topic)
                    .collect(),
            };
            if topics.is_empty() {
                return Err(CliError::NoMirrors {
                    link: a.link.clone(),
                });
            }
            let mut results = Vec::with_capacity(topics.len());
            for topic in &topics {
                let r = c
                    .verify(pb::VerifyRequest {
                        link: a.link.clone(),
                        topic: topic.clone(),
                        partitions: a.partitions.clone(),
                        from_offset: a.from,
                        to_offset: a.to,
                        max_records: a.max_records,
                    })
                    .await?
                    .into_inner();
                if !json {
                    print!("{}", render::verify_text(topic, &r));
                }
                results.push((topic.clone(), r));
            }
            let identical = results.iter().all(|(_, r)| r.identical);
            if json {
                match (&a.topic, results.first()) {
                    (Some(_), Some((_, r))) => print_json(&render::verify_json(r))?,
                    _ => print_json(&render::verify_all_json(&results))?,
                }
            } else if a.topic.is_none() {
                println!(
                    "{} of {} topics identical",
                    results.iter().filter(|(_, r)| r.identical).count(),
                    results.len()
                );
            }
            if !identical {
                return Ok(1);
            }
        }
        Command::Promote(a) | Command::Rollback(a) => {
            let req = pb::PromoteRequest {
                link: a.link.clone(),
                topics: a.topics.clone(),
                quiet_ms: a.quiet_ms,
                drain_timeout_ms: a.drain_timeout_ms,
                transaction_wait_ms: a.transaction_wait_ms,
                groups: a.groups.clone(),
                rejoin_timeout_ms: a.rejoin_timeout_ms,
                verify: a.verify,
            };
            let p = match &cli.command {
                Command::Promote(_) => c.promote(req).await?,
                _ => c.rollback(req).await?,
            }
            .into_inner();
            if json {
                print_json(&render::promotion_json(&p))?
            } else {
                print!("{}", render::promotion_text(&p))
            }
        }
        Command::Detach {
            selection: s,
            watch_ms,
        } => {
            let ms = c
                .detach(pb::DetachRequest {
                    selection: Some(pb::MirrorSelection {
                        link: s.link.clone(),
                        topics: s.topics.clone(),
                        all: s.all,
                        force: false,
                    }),
                    watch_ms: *watch_ms,
                })
                .await?
                .into_inner()
                .mirrors;
            if json {
                print_json(
                    &serde_json::json!({"detached": ms.iter().map(|m| m.topic.clone()).collect::<Vec<_>>()}),
                )?
            } else {
                ms.iter().for_each(|m| {
                    println!(
                        "detached {}: the source is no longer kept complete",
                        m.topic
                    )
                });
            }
        }
        Command::Promotions { link } => {
            let ps = c
                .list_promotions(pb::ListPromotionsRequest { link: link.clone() })
                .await?
                .into_inner()
                .promotions;
            if json {
                print_json(&ps.iter().map(render::promotion_json).collect::<Vec<_>>())?
            } else if ps.is_empty() {
                println!("no promotions on link {link}; start one with `cutover promote --link {link} TOPIC...`");
            } else {
                ps.iter()
                    .for_each(|p| print!("{}", render::promotion_text(p)));
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {

    #[test]
    fn link_properties_come_from_a_file_and_flags_over_it() {
        assert_eq!(
            parse_property("sasl.mechanism = SCRAM-SHA-512").unwrap(),
            ("sasl.mechanism".into(), "SCRAM-SHA-512".into())
        );
        assert_eq!(
            parse_property("ssl.endpoint.identification.algorithm=").unwrap(),
            (
                "ssl.endpoint.identification.algorithm".into(),
                String::new()
            )
        );
        assert!(parse_property("no-equals").is_err());
        assert!(parse_property("=v").is_err());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("source.properties");
        std::fs::write(
            &file,
            "# source\nsecurity.protocol=SASL_SSL\n\n! also a comment\nsasl.mechanism=PLAIN\n",
        )
        .unwrap();
        let p = properties(
            Some(&file),
            &[("sasl.mechanism".into(), "SCRAM-SHA-256".into())],
        )
        .unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p["security.protocol"], "SASL_SSL");
        assert_eq!(p["sasl.mechanism"], "SCRAM-SHA-256", "the flag wins");
        std::fs::write(&file, "security.protocol=SSL\njunk\n").unwrap();
        let e = properties(Some(&file), &[]).unwrap_err().to_string();
        assert!(e.contains("source.properties:2"), "{e}");
        let e = properties(Some(&dir.path().join("none")), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("none"), "{e}");
    }

    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut all = vec!["cutover"];
        all.extend_from_slice(args);
        let mut cli = Cli::try_parse_from(all).expect("arguments parse");
        // The test runner's own environment (CI may set TRACEPARENT) must not leak in.
        if !args.contains(&"--traceparent") {
            cli.traceparent = None;
        }
        cli
    }

    const JOINED: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn trace_is_a_global_flag_and_off_by_default() {
        let mut plain = cli(&["mirror", "list", "--link", "l"]);
        plain.trace = false;
        assert_eq!(trace_context(&plain), (None, None));
        let traced = cli(&["mirror", "list", "--link", "l", "--trace"]);
        assert!(traced.trace);
        let (tp, warning) = trace_context(&traced);
        assert!(tp.is_some() && warning.is_none());
    }

    #[test]
    fn a_given_traceparent_is_joined_with_or_without_trace() {
        for args in [
            &["--traceparent", JOINED, "link", "list"][..],
            &["--trace", "--traceparent", JOINED, "link", "list"][..],
        ] {
            let (tp, warning) = trace_context(&cli(args));
            assert_eq!(warning, None);
            let tp = tp.expect("joined");
            assert_eq!(tp.header_value(), JOINED);
        }
    }

    #[test]
    fn a_broken_traceparent_warns_and_never_fails_the_command() {
        let mut c = cli(&["--traceparent", "nonsense", "link", "list"]);
        c.trace = false;
        let (tp, warning) = trace_context(&c);
        assert_eq!(tp, None);
        assert!(warning.is_some_and(|w| w.contains("not tracing")));
        c.trace = true;
        let (tp, warning) = trace_context(&c);
        assert!(tp.is_some_and(|t| !t.header_value().contains("0af7651916cd43dd")));
        assert!(warning.is_some_and(|w| w.contains("new trace")));
    }
}
