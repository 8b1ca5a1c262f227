#!/usr/bin/env bash
# Makes sure PostgreSQL and Redis answer on loopback for the local stack, then
# prints `export DATABASE_URL=...` and `export REDIS_URL=...` for the caller:
#
#   eval "$(deploy/local/services.sh)"    # up (the default)
#   deploy/local/services.sh status       # what answers, on which port
#   deploy/local/services.sh stop         # stop what this script started under .trainyard/
#
# "up" is idempotent. For each service it scans ports upward from the chosen
# one and takes the first that works:
#   - a server that already answers there (and, for PostgreSQL, lets us log in
#     without a password as the current user or `postgres`) is reused;
#   - a free port gets a server: for PostgreSQL the OS cluster configured on
#     that port (`pg_ctlcluster`) if there is one and it accepts us, else a
#     throw-away cluster of our own in .trainyard/pg (trust auth, loopback
#     only); for Redis our own `redis-server` with its files in .trainyard/redis;
#   - a port held by something else is skipped.
# Missing binaries are installed from the OS packages (`postgresql`,
# `redis-server`) with apt-get. The database TRAINYARD_DB_NAME is created if
# missing. Everything except the export lines goes to stderr.
#
# Settings (environment):
#   TRAINYARD_PG_PORT       first PostgreSQL port to try      (5432)
#   TRAINYARD_REDIS_PORT    first Redis port to try           (6379)
#   TRAINYARD_DB_NAME       database to create and point at   (trainyard)
#   TRAINYARD_PG_USER       database user to try first        (current user, then postgres)
#   TRAINYARD_STATE_DIR     where our own servers keep files  (<repo>/.trainyard)
set -euo pipefail

# stdout is reserved for the export lines; everything else goes to stderr.
exec 3>&1 1>&2

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STATE=${TRAINYARD_STATE_DIR:-$ROOT/.trainyard}
PG_PORT=${TRAINYARD_PG_PORT:-5432}
REDIS_PORT=${TRAINYARD_REDIS_PORT:-6379}
DB_NAME=${TRAINYARD_DB_NAME:-trainyard}
# How many ports above the chosen one may be tried when it is taken.
PORT_SPAN=10
LOOPBACK=127.0.0.1

log() { printf 'services: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

[[ $DB_NAME =~ ^[a-z_][a-z0-9_]*$ ]] || die "TRAINYARD_DB_NAME must be a plain lower-case identifier, got '$DB_NAME'"
[[ $PG_PORT =~ ^[0-9]+$ ]] || die "TRAINYARD_PG_PORT must be a port number, got '$PG_PORT'"
[[ $REDIS_PORT =~ ^[0-9]+$ ]] || die "TRAINYARD_REDIS_PORT must be a port number, got '$REDIS_PORT'"

# Runs a command that may leave a server behind. The server must not inherit
# the export pipe (fd 3: the caller's `$(...)` would wait for it forever) or
# the lock (fd 9: the next run would block on it).
spawn() {
    "$@" 3>&- 9>&-
}

as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

apt_install() {
    command -v apt-get >/dev/null || die "missing $*; install it with your package manager and run again"
    log "installing $* from the OS packages"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    # The packages' install scripts may start the services themselves.
    spawn as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

# True when something accepts TCP connections on the loopback port.
port_taken() {
    timeout 3 bash -c ": <>/dev/tcp/$LOOPBACK/$1" 2>/dev/null
}

# ---------------------------------------------------------------- PostgreSQL

# Directory holding initdb/pg_ctl: the newest /usr/lib/postgresql/N/bin, else PATH.
pg_bindir() {
    local dir
    dir=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
    if [[ -n $dir && -x $dir/initdb ]]; then
        echo "$dir"
    elif command -v pg_ctl >/dev/null && command -v initdb >/dev/null; then
        dirname "$(command -v pg_ctl)"
    fi
}

ensure_pg_binaries() {
    if ! command -v psql >/dev/null || ! command -v pg_isready >/dev/null || [[ -z $(pg_bindir) ]]; then
        apt_install postgresql
    fi
    [[ -n $(pg_bindir) ]] || die "PostgreSQL server binaries (initdb, pg_ctl) not found after installing"
}

pg_answers() {
    pg_isready -q -h "$LOOPBACK" -p "$1" -t 3
}

# Prints the first user that can log in on the port without a password.
pg_login_user() {
    local port=$1 user
    for user in "${TRAINYARD_PG_USER:-}" "$(id -un)" postgres; do
        [[ -n $user ]] || continue
        if psql -X -w -q -h "$LOOPBACK" -p "$port" -U "$user" -d postgres -tAc 'select 1' >/dev/null 2>&1; then
            echo "$user"
            return 0
        fi
    done
    return 1
}

# Runs a command as the owner of our own cluster: initdb and postgres refuse root.
run_as_pg_owner() {
    if [[ $EUID -ne 0 ]]; then
        "$@"
    elif command -v runuser >/dev/null; then
        runuser -u postgres -- "$@"
    else
        su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
    fi
}

# Our own cluster lives in .trainyard/pg unless the postgres user cannot reach
# it (a clone under a private home directory); then under the postgres home.
own_pgdata() {
    local dir=$STATE/pg
    if [[ $EUID -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || die "user 'postgres' is missing (it comes with the postgresql package)"
        mkdir -p "$dir"
        chown postgres: "$dir"
        chmod 700 "$dir"
        if ! runuser -u postgres -- test -w "$dir" 2>/dev/null; then
            dir=$(getent passwd postgres | cut -d: -f6)/trainyard-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)
            log "user postgres cannot reach $STATE/pg; using $dir for our cluster"
            mkdir -p "$dir"
            chown postgres: "$dir"
            chmod 700 "$dir"
        fi
    else
        mkdir -p "$dir"
        chmod 700 "$dir"
    fi
    echo "$dir"
}

# Starts the OS cluster configured for this port, if there is one and it is down.
# Succeeds only when the cluster then accepts us; a cluster we started but
# cannot log in to is stopped again so the port goes back to our own cluster.
start_os_cluster() {
    local port=$1 ver name cport status
    command -v pg_lsclusters >/dev/null && command -v pg_ctlcluster >/dev/null || return 1
    while read -r ver name cport status _; do
        [[ $cport == "$port" && $status == down* ]] || continue
        log "starting the OS cluster $ver/$name on port $port"
        spawn as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start >&2 || return 1
        if pg_login_user "$port" >/dev/null; then
            return 0
        fi
        log "cluster $ver/$name wants a password; stopping it again and using our own cluster"
        as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" stop >&2 || true
        return 1
    done < <(pg_lsclusters --no-header 2>/dev/null)
    return 1
}

# Starts (creating on first use) our own cluster on the port. If it is already
# running on another port, that port is printed instead.
start_own_cluster() {
    local port=$1 bin data running_port
    bin=$(pg_bindir)
    data=$(own_pgdata)
    if [[ ! -s $data/PG_VERSION ]]; then
        log "creating a PostgreSQL cluster in $data (trust auth, loopback only)"
        run_as_pg_owner "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --no-locale >/dev/null
        # A disposable development cluster: durability is traded for test speed.
        cat >>"$data/postgresql.conf" <<'EOF'

# trainyard local stack (deploy/local/services.sh)
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
EOF
    fi
    if run_as_pg_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        running_port=$(sed -n 4p "$data/postmaster.pid")
        log "our cluster in $data already runs on port $running_port"
        echo "$running_port"
        return 0
    fi
    log "starting our PostgreSQL cluster on $LOOPBACK:$port"
    spawn run_as_pg_owner "$bin/pg_ctl" -D "$data" -l "$data/server.log" -o "-p $port" -w -t 60 start >/dev/null ||
        die "PostgreSQL did not start; see $data/server.log"
    echo "$port"
}

# Prints "<port> <user>" of a PostgreSQL server we can use.
ensure_postgres() {
    local port user started
    ensure_pg_binaries
    for ((port = PG_PORT; port < PG_PORT + PORT_SPAN; port++)); do
        if pg_answers "$port"; then
            if user=$(pg_login_user "$port"); then
                log "PostgreSQL answers on $LOOPBACK:$port (user $user); reusing it"
                echo "$port $user"
                return 0
            fi
            log "PostgreSQL on port $port wants a password; trying the next port"
            continue
        fi
        if port_taken "$port"; then
            log "port $port is taken by something that is not PostgreSQL; trying the next port"
            continue
        fi
        if start_os_cluster "$port"; then
            started=$port
        else
            started=$(start_own_cluster "$port")
        fi
        user=$(pg_login_user "$started") || die "cannot log in to the PostgreSQL we started on port $started"
        log "PostgreSQL ready on $LOOPBACK:$started (user $user)"
        echo "$started $user"
        return 0
    done
    die "no usable PostgreSQL port in $PG_PORT..$((PG_PORT + PORT_SPAN - 1))"
}

ensure_database() {
    local port=$1 user=$2
    if [[ -z $(psql -X -w -h "$LOOPBACK" -p "$port" -U "$user" -d postgres -tAc \
        "select 1 from pg_database where datname = '$DB_NAME'") ]]; then
        log "creating database $DB_NAME"
        psql -X -w -q -h "$LOOPBACK" -p "$port" -U "$user" -d postgres -c "create database \"$DB_NAME\"" >/dev/null
    fi
}

# --------------------------------------------------------------------- Redis

ensure_redis_binaries() {
    if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
        apt_install redis-server
    fi
}

redis_answers() {
    [[ $(timeout 3 redis-cli -h "$LOOPBACK" -p "$1" ping 2>/dev/null) == PONG ]]
}

start_own_redis() {
    local port=$1 dir=$STATE/redis i
    mkdir -p "$dir"
    log "starting our Redis on $LOOPBACK:$port (no persistence, files in $dir)"
    spawn redis-server --daemonize yes --bind "$LOOPBACK" --port "$port" --save "" --appendonly no \
        --dir "$dir" --logfile "$dir/redis.log" --pidfile "$dir/redis.pid" >/dev/null
    for ((i = 0; i < 50; i++)); do
        redis_answers "$port" && return 0
        sleep 0.2
    done
    die "Redis did not answer on port $port; see $dir/redis.log"
}

# Prints the port of a Redis server we can use.
ensure_redis() {
    local port
    ensure_redis_binaries
    for ((port = REDIS_PORT; port < REDIS_PORT + PORT_SPAN; port++)); do
        if redis_answers "$port"; then
            log "Redis answers on $LOOPBACK:$port; reusing it"
            echo "$port"
            return 0
        fi
        if port_taken "$port"; then
            log "port $port is taken by something that does not answer PING; trying the next port"
            continue
        fi
        start_own_redis "$port"
        echo "$port"
        return 0
    done
    die "no usable Redis port in $REDIS_PORT..$((REDIS_PORT + PORT_SPAN - 1))"
}

# ------------------------------------------------------------------ commands

up() {
    local pg port user redis_port
    mkdir -p "$STATE"
    # Two callers at once (CI and a shell) must not both initdb or start servers.
    exec 9>"$STATE/services.lock"
    command -v flock >/dev/null && flock 9
    pg=$(ensure_postgres)
    read -r port user <<<"$pg"
    ensure_database "$port" "$user"
    redis_port=$(ensure_redis)
    printf "export DATABASE_URL='postgres://%s@%s:%s/%s'\n" "$user" "$LOOPBACK" "$port" "$DB_NAME" >&3
    printf "export REDIS_URL='redis://%s:%s'\n" "$LOOPBACK" "$redis_port" >&3
}

status() {
    local port found=0
    for ((port = PG_PORT; port < PG_PORT + PORT_SPAN; port++)); do
        if pg_answers "$port"; then
            log "PostgreSQL answers on $LOOPBACK:$port"
            found=1
        fi
    done
    for ((port = REDIS_PORT; port < REDIS_PORT + PORT_SPAN; port++)); do
        if redis_answers "$port"; then
            log "Redis answers on $LOOPBACK:$port"
            found=1
        fi
    done
    [[ $found -eq 1 ]] || log "neither PostgreSQL nor Redis answers on ports $PG_PORT+ / $REDIS_PORT+"
}

# Stops only the servers whose files live in our state directory; an OS
# cluster or a Redis this script merely reused is left alone.
stop() {
    local bin data pid i
    bin=$(pg_bindir)
    for data in "$STATE/pg" "$(getent passwd postgres 2>/dev/null | cut -d: -f6)/trainyard-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)"; do
        if [[ -n $bin && -f $data/postmaster.pid ]]; then
            log "stopping our PostgreSQL cluster in $data"
            run_as_pg_owner "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null || true
        fi
    done
    if [[ -f $STATE/redis/redis.pid ]]; then
        pid=$(cat "$STATE/redis/redis.pid")
        if kill -0 "$pid" 2>/dev/null; then
            log "stopping our Redis (pid $pid)"
            kill -TERM "$pid"
            for ((i = 0; i < 50; i++)); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.2
            done
        fi
        rm -f "$STATE/redis/redis.pid"
    fi
}

case ${1:-up} in
up) up ;;
status) status ;;
stop) stop ;;
*) die "usage: $0 [up|status|stop]" ;;
esac
