"""The schema, as an ordered list of SQL scripts: migration N is `MIGRATIONS[N - 1]`.

`PRAGMA user_version` records how many have been applied; `store.db.migrate` applies the rest,
each in its own transaction, when a connection is opened. Never edit an applied migration:
append a new one.
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    # 1: customers, consent, inbox bookkeeping, review queue, outbox, campaigns, leases.
    """
    CREATE TABLE customers (
        id            INTEGER PRIMARY KEY,
        email         TEXT NOT NULL UNIQUE COLLATE NOCASE,
        name          TEXT NOT NULL,
        company       TEXT NOT NULL DEFAULT '',
        phone         TEXT NOT NULL DEFAULT '',
        name_key      TEXT NOT NULL DEFAULT '',
        company_key   TEXT NOT NULL DEFAULT '',
        announcements INTEGER NOT NULL DEFAULT 1 CHECK (announcements IN (0, 1)),
        offers        INTEGER NOT NULL DEFAULT 1 CHECK (offers IN (0, 1)),
        created_at    TEXT NOT NULL,
        updated_at    TEXT NOT NULL
    );
    CREATE INDEX customers_name_key ON customers (name_key);
    CREATE INDEX customers_company_key ON customers (company_key);

    -- Every change of a preference, kept forever (GDPR art. 7(1): consent must be provable).
    CREATE TABLE consent_events (
        id          INTEGER PRIMARY KEY,
        customer_id INTEGER NOT NULL REFERENCES customers (id),
        at          TEXT NOT NULL,
        category    TEXT NOT NULL CHECK (category IN ('announcements', 'offers')),
        old_value   INTEGER CHECK (old_value IN (0, 1)),
        new_value   INTEGER NOT NULL CHECK (new_value IN (0, 1)),
        source      TEXT NOT NULL CHECK (source IN ('import', 'email', 'operator', 'one-click')),
        reference   TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX consent_events_customer ON consent_events (customer_id, id);
    CREATE TRIGGER consent_events_are_never_updated BEFORE UPDATE ON consent_events
    BEGIN SELECT RAISE(ABORT, 'consent events are permanent'); END;
    CREATE TRIGGER consent_events_are_never_deleted BEFORE DELETE ON consent_events
    BEGIN SELECT RAISE(ABORT, 'consent events are permanent'); END;

    -- Where the inbox worker has got to in each folder (RFC 3501 §2.3.1.1: UIDs are only
    -- comparable under one UIDVALIDITY).
    CREATE TABLE mailbox_state (
        folder      TEXT PRIMARY KEY,
        uidvalidity INTEGER NOT NULL,
        last_uid    INTEGER NOT NULL
    );

    -- One row per request message decided on: the idempotency key is the Message-ID (or a
    -- digest of the message when it has none). `moved` says whether it has left the inbox.
    CREATE TABLE inbound (
        id           INTEGER PRIMARY KEY,
        message_key  TEXT NOT NULL UNIQUE,
        message_id   TEXT NOT NULL DEFAULT '',
        folder       TEXT NOT NULL,
        uidvalidity  INTEGER NOT NULL,
        uid          INTEGER NOT NULL,
        outcome      TEXT NOT NULL CHECK (outcome IN ('unsubscribed', 'review', 'duplicate')),
        destination  TEXT NOT NULL,
        moved        INTEGER NOT NULL DEFAULT 0,
        detail       TEXT NOT NULL DEFAULT '',
        decided_at   TEXT NOT NULL
    );
    CREATE INDEX inbound_unmoved ON inbound (folder, moved) WHERE moved = 0;
    CREATE INDEX inbound_uid ON inbound (folder, uidvalidity, uid);

    CREATE TABLE review_items (
        id          INTEGER PRIMARY KEY,
        inbound_id  INTEGER REFERENCES inbound (id),
        message_id  TEXT NOT NULL DEFAULT '',
        sender      TEXT NOT NULL DEFAULT '',
        subject     TEXT NOT NULL DEFAULT '',
        reason      TEXT NOT NULL,
        status      TEXT NOT NULL DEFAULT 'open'
                    CHECK (status IN ('open', 'resolved', 'dismissed')),
        created_at  TEXT NOT NULL,
        settled_at  TEXT,
        settlement  TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX review_items_open ON review_items (status, id);

    -- Durable outbox for transactional mail (confirmations): written in the same transaction
    -- as the change that caused it, sent later, retried with backoff.
    CREATE TABLE outbox (
        id              INTEGER PRIMARY KEY,
        customer_id     INTEGER NOT NULL REFERENCES customers (id),
        to_address      TEXT NOT NULL,
        to_name         TEXT NOT NULL DEFAULT '',
        categories      TEXT NOT NULL,
        request_subject TEXT NOT NULL DEFAULT '',
        in_reply_to     TEXT NOT NULL DEFAULT '',
        refs            TEXT NOT NULL DEFAULT '',
        status          TEXT NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'sent', 'failed', 'suppressed')),
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        last_error      TEXT NOT NULL DEFAULT '',
        created_at      TEXT NOT NULL,
        sent_at         TEXT
    );
    CREATE INDEX outbox_due ON outbox (status, next_attempt_at);
    CREATE INDEX outbox_customer_created ON outbox (customer_id, created_at);

    CREATE TABLE campaigns (
        id            INTEGER PRIMARY KEY,
        kind          TEXT NOT NULL CHECK (kind IN ('announcements', 'offers')),
        template      TEXT NOT NULL,
        subject       TEXT NOT NULL,
        status        TEXT NOT NULL CHECK (status IN
                      ('draft', 'scheduled', 'sending', 'paused', 'sent', 'cancelled', 'failed')),
        scheduled_at  TEXT,
        created_at    TEXT NOT NULL,
        started_at    TEXT,
        finished_at   TEXT,
        status_reason TEXT NOT NULL DEFAULT '',
        audience_at   TEXT
    );
    CREATE INDEX campaigns_due ON campaigns (status, scheduled_at);

    -- Per-recipient ledger: the truth about who has been mailed.
    CREATE TABLE campaign_recipients (
        campaign_id     INTEGER NOT NULL REFERENCES campaigns (id),
        customer_id     INTEGER NOT NULL REFERENCES customers (id),
        status          TEXT NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'skipped')),
        attempts        INTEGER NOT NULL DEFAULT 0,
        last_reply      TEXT NOT NULL DEFAULT '',
        next_attempt_at TEXT,
        updated_at      TEXT,
        PRIMARY KEY (campaign_id, customer_id)
    ) WITHOUT ROWID;
    CREATE INDEX campaign_recipients_status
        ON campaign_recipients (campaign_id, status, customer_id);

    -- Leases: one holder at a time for work that must not run twice (e.g. sending a campaign).
    CREATE TABLE leases (
        name       TEXT PRIMARY KEY,
        holder     TEXT NOT NULL,
        expires_at REAL NOT NULL
    );
    """,
    # 2: consent events say who made a change (`actor`: a console user, an operator) and
    # accept every source of consent change (SQLite cannot alter a CHECK: rebuild the table;
    # DROP TABLE's implicit delete fires no trigger).
    """
    CREATE TABLE consent_events_2 (
        id          INTEGER PRIMARY KEY,
        customer_id INTEGER NOT NULL REFERENCES customers (id),
        at          TEXT NOT NULL,
        category    TEXT NOT NULL,
        old_value   INTEGER CHECK (old_value IN (0, 1)),
        new_value   INTEGER NOT NULL CHECK (new_value IN (0, 1)),
        source      TEXT NOT NULL CHECK (source IN ('import', 'email', 'operator',
                    'one-click', 'preference page', 'complaint', 'console')),
        reference   TEXT NOT NULL DEFAULT '',
        actor       TEXT NOT NULL DEFAULT ''
    );
    INSERT INTO consent_events_2 (id, customer_id, at, category, old_value, new_value, source,
                                  reference)
        SELECT id, customer_id, at, category, old_value, new_value, source, reference
        FROM consent_events;
    DROP TABLE consent_events;
    ALTER TABLE consent_events_2 RENAME TO consent_events;
    CREATE INDEX consent_events_customer ON consent_events (customer_id, id);
    CREATE INDEX consent_events_source_at ON consent_events (source, at);
    CREATE TRIGGER consent_events_are_never_updated BEFORE UPDATE ON consent_events
    BEGIN SELECT RAISE(ABORT, 'consent events are permanent'); END;
    CREATE TRIGGER consent_events_are_never_deleted BEFORE DELETE ON consent_events
    BEGIN SELECT RAISE(ABORT, 'consent events are permanent'); END;
    """,
    # 3: outbox claims: a row is claimed before it is sent, so two processes
    # never send the same confirmation; a claim names its owner (host, pid) and expires
    # (epoch seconds).
    """
    ALTER TABLE outbox ADD COLUMN claim_host TEXT;
    ALTER TABLE outbox ADD COLUMN claim_pid INTEGER;
    ALTER TABLE outbox ADD COLUMN claim_expires_at REAL;
    CREATE INDEX outbox_claims ON outbox (claim_host, claim_pid) WHERE claim_host IS NOT NULL;
    """,
    # 4: deliverability: reports, undeliverable addresses, sent Message-IDs
    # Delivery reports and complaints read, the addresses we no longer mail and why, and the
    # Message-ID of every message sent, to tie a report to it.
    """
    -- Sent messages' Message-IDs (RFC 5322 §3.6.4, with angle brackets): a report that quotes
    -- one is tied to that message. (Another helper adds campaign_recipients.message_id too.)
    ALTER TABLE campaign_recipients ADD COLUMN message_id TEXT;
    CREATE INDEX campaign_recipients_message_id ON campaign_recipients (message_id)
        WHERE message_id IS NOT NULL;
    ALTER TABLE outbox ADD COLUMN message_id TEXT;
    CREATE INDEX outbox_message_id ON outbox (message_id) WHERE message_id IS NOT NULL;

    -- One row per report read (bounce or complaint), acted on or not: the idempotency key is
    -- the report's own Message-ID (or a digest), so the same report seen twice counts once.
    CREATE TABLE delivery_reports (
        id           INTEGER PRIMARY KEY,
        report_key   TEXT NOT NULL UNIQUE,
        received_at  TEXT NOT NULL,
        kind         TEXT NOT NULL CHECK (kind IN ('hard', 'soft', 'complaint')),
        format       TEXT NOT NULL DEFAULT '',
        status       TEXT NOT NULL DEFAULT '',
        diagnostic   TEXT NOT NULL DEFAULT '',
        customer_id  INTEGER REFERENCES customers (id),
        campaign_id  INTEGER REFERENCES campaigns (id),
        outbox_id    INTEGER REFERENCES outbox (id),
        tied_by      TEXT NOT NULL DEFAULT '' CHECK (tied_by IN ('', 'verp', 'message-id')),
        outcome      TEXT NOT NULL CHECK (outcome IN
                     ('undeliverable', 'soft-counted', 'opted-out', 'ignored')),
        reason       TEXT NOT NULL DEFAULT '',
        moved        INTEGER NOT NULL DEFAULT 0 CHECK (moved IN (0, 1))
    );
    CREATE INDEX delivery_reports_received ON delivery_reports (received_at);
    CREATE INDEX delivery_reports_campaign ON delivery_reports (campaign_id, kind);
    CREATE INDEX delivery_reports_customer ON delivery_reports (customer_id, kind, received_at);

    -- Every change of an address's deliverability, kept forever (who, when, why).
    CREATE TABLE delivery_events (
        id          INTEGER PRIMARY KEY,
        customer_id INTEGER NOT NULL REFERENCES customers (id),
        at          TEXT NOT NULL,
        event       TEXT NOT NULL CHECK (event IN ('undeliverable', 'reactivated')),
        source      TEXT NOT NULL CHECK (source IN ('bounce', 'soft bounces', 'operator',
                    'console')),
        reason      TEXT NOT NULL DEFAULT '',
        report_id   INTEGER REFERENCES delivery_reports (id),
        actor       TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX delivery_events_customer ON delivery_events (customer_id, id);
    CREATE TRIGGER delivery_events_are_never_updated BEFORE UPDATE ON delivery_events
    BEGIN SELECT RAISE(ABORT, 'delivery events are permanent'); END;
    CREATE TRIGGER delivery_events_are_never_deleted BEFORE DELETE ON delivery_events
    BEGIN SELECT RAISE(ABORT, 'delivery events are permanent'); END;

    -- The addresses not to mail now: one row per customer, read per recipient at send time.
    CREATE TABLE undeliverable (
        customer_id INTEGER PRIMARY KEY REFERENCES customers (id),
        since       TEXT NOT NULL,
        reason      TEXT NOT NULL DEFAULT ''
    );
    """,
    # 5: the daemon's heartbeat, read by `mailer status`. One row per daemon
    # (host and pid); `parts` is the JSON of each part's state.
    """
    CREATE TABLE daemon_heartbeat (
        host       TEXT NOT NULL,
        pid        INTEGER NOT NULL,
        started_at TEXT NOT NULL,
        version    TEXT NOT NULL,
        beat_at    TEXT NOT NULL,
        stopped_at TEXT,
        parts      TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (host, pid)
    );
    """,
    # 6: a lease records its holder's host and pid, so a holder that died on this host is
    # taken over at once (each recipient's Message-ID is kept in campaign_recipients.message_id,
    # added by migration 4).
    """
    ALTER TABLE leases ADD COLUMN host TEXT NOT NULL DEFAULT '';
    ALTER TABLE leases ADD COLUMN pid INTEGER NOT NULL DEFAULT 0;
    """,
    # 7: report messages waiting to be moved to [bounces] folder
    """
    -- One row per report message (folder, UIDVALIDITY, UID) tied to a message of ours: written
    -- in the transaction that records the report, so the move that follows survives a crash;
    -- a second copy of the same report gets its own row and is moved too.
    CREATE TABLE report_moves (
        folder      TEXT NOT NULL,
        uidvalidity INTEGER NOT NULL,
        uid         INTEGER NOT NULL,
        report_id   INTEGER NOT NULL REFERENCES delivery_reports (id),
        destination TEXT NOT NULL,
        moved       INTEGER NOT NULL DEFAULT 0 CHECK (moved IN (0, 1)),
        PRIMARY KEY (folder, uidvalidity, uid)
    );
    CREATE INDEX report_moves_unmoved ON report_moves (folder, moved) WHERE moved = 0;
    """,
    # 8: the console: accounts, sessions, login throttling, an audit trail;
    # a full-text index for customer search; daily roll-ups the overview's charts read, kept
    # by triggers so a chart over 90 days never scans millions of rows.
    """
    CREATE TABLE console_users (
        id            INTEGER PRIMARY KEY,
        name          TEXT NOT NULL UNIQUE,
        role          TEXT NOT NULL CHECK (role IN ('admin', 'marketing', 'reviewer')),
        password_hash TEXT NOT NULL,
        created_at    TEXT NOT NULL,
        updated_at    TEXT NOT NULL
    );
    -- The cookie holds a random token; only its SHA-256 is stored (a stolen database does not
    -- give working sessions).
    CREATE TABLE console_sessions (
        token_hash  TEXT PRIMARY KEY,
        user_id     INTEGER NOT NULL REFERENCES console_users (id) ON DELETE CASCADE,
        csrf        TEXT NOT NULL,
        created_at  REAL NOT NULL,
        last_seen   REAL NOT NULL
    );
    CREATE INDEX console_sessions_user ON console_sessions (user_id);
    CREATE TABLE console_login_failures (
        key          TEXT PRIMARY KEY,
        failures     INTEGER NOT NULL,
        first_at     REAL NOT NULL,
        locked_until REAL NOT NULL DEFAULT 0
    );
    CREATE TABLE console_audit (
        id     INTEGER PRIMARY KEY,
        at     TEXT NOT NULL,
        actor  TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL DEFAULT ''
    );

    CREATE VIRTUAL TABLE customers_search USING fts5 (
        name, company, email, content = 'customers', content_rowid = 'id',
        tokenize = "unicode61 remove_diacritics 2"
    );
    INSERT INTO customers_search (rowid, name, company, email)
        SELECT id, name, company, email FROM customers;
    CREATE TRIGGER customers_search_insert AFTER INSERT ON customers BEGIN
        INSERT INTO customers_search (rowid, name, company, email)
        VALUES (new.id, new.name, new.company, new.email);
    END;
    CREATE TRIGGER customers_search_delete AFTER DELETE ON customers BEGIN
        INSERT INTO customers_search (customers_search, rowid, name, company, email)
        VALUES ('delete', old.id, old.name, old.company, old.email);
    END;
    CREATE TRIGGER customers_search_update AFTER UPDATE OF name, company, email ON customers
    BEGIN
        INSERT INTO customers_search (customers_search, rowid, name, company, email)
        VALUES ('delete', old.id, old.name, old.company, old.email);
        INSERT INTO customers_search (rowid, name, company, email)
        VALUES (new.id, new.name, new.company, new.email);
    END;

    CREATE TABLE optouts_daily (
        day    TEXT NOT NULL,
        source TEXT NOT NULL,
        count  INTEGER NOT NULL,
        PRIMARY KEY (day, source)
    ) WITHOUT ROWID;
    INSERT INTO optouts_daily (day, source, count)
        SELECT substr(at, 1, 10), source, count(*) FROM consent_events
        WHERE new_value = 0 GROUP BY 1, 2;
    CREATE TRIGGER optouts_daily_count AFTER INSERT ON consent_events
    WHEN new.new_value = 0 BEGIN
        INSERT INTO optouts_daily (day, source, count) VALUES (substr(new.at, 1, 10), new.source, 1)
        ON CONFLICT (day, source) DO UPDATE SET count = count + 1;
    END;

    CREATE TABLE sends_daily (
        day   TEXT PRIMARY KEY,
        count INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO sends_daily (day, count)
        SELECT substr(updated_at, 1, 10), count(*) FROM campaign_recipients
        WHERE status = 'sent' AND updated_at IS NOT NULL GROUP BY 1;
    CREATE TRIGGER sends_daily_count AFTER UPDATE OF status ON campaign_recipients
    WHEN new.status = 'sent' AND old.status IS NOT 'sent' BEGIN
        INSERT INTO sends_daily (day, count)
        VALUES (substr(coalesce(new.updated_at, strftime('%Y-%m-%dT%H:%M:%S', 'now')), 1, 10), 1)
        ON CONFLICT (day) DO UPDATE SET count = count + 1;
    END;

    -- Each campaign's ledger in numbers, kept as rows move, so the overview shows the progress
    -- of a million-recipient campaign without counting a million rows. (A later migration that
    -- rebuilds campaign_recipients must create these triggers again.)
    CREATE TABLE campaign_progress (
        campaign_id INTEGER NOT NULL,
        status      TEXT NOT NULL,
        n           INTEGER NOT NULL,
        PRIMARY KEY (campaign_id, status)
    ) WITHOUT ROWID;
    INSERT INTO campaign_progress (campaign_id, status, n)
        SELECT campaign_id, status, count(*) FROM campaign_recipients GROUP BY 1, 2;
    CREATE TRIGGER campaign_progress_insert AFTER INSERT ON campaign_recipients BEGIN
        INSERT INTO campaign_progress (campaign_id, status, n) VALUES (new.campaign_id,
            new.status, 1) ON CONFLICT (campaign_id, status) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER campaign_progress_update AFTER UPDATE OF status ON campaign_recipients
    WHEN new.status IS NOT old.status BEGIN
        UPDATE campaign_progress SET n = n - 1
        WHERE campaign_id = old.campaign_id AND status = old.status;
        INSERT INTO campaign_progress (campaign_id, status, n) VALUES (new.campaign_id,
            new.status, 1) ON CONFLICT (campaign_id, status) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER campaign_progress_delete AFTER DELETE ON campaign_recipients BEGIN
        UPDATE campaign_progress SET n = n - 1
        WHERE campaign_id = old.campaign_id AND status = old.status;
    END;
    """,
    # 9: why a paused campaign paused, as a value the code decides on (the daemon resumes
    # only those paused on an unreachable SMTP server; `mailer status` warns about those
    # paused by settings) rather than by reading `status_reason`, which is for people. The
    # campaigns paused before this migration get theirs from the reasons they were written with.
    """
    ALTER TABLE campaigns ADD COLUMN paused_by TEXT NOT NULL DEFAULT '';
    UPDATE campaigns SET paused_by = CASE
        WHEN status_reason = 'paused by operator' THEN 'operator'
        WHEN status_reason = 'paused: interrupted' THEN 'interrupted'
        WHEN status_reason LIKE 'paused: cannot send: %' THEN 'settings'
        WHEN status_reason LIKE 'paused: SMTP server unavailable%' THEN 'smtp-unavailable'
        WHEN status_reason LIKE 'paused: SMTP server refused us%' THEN 'smtp-refused'
        WHEN status_reason LIKE 'paused: % attempted recipients failed %' THEN 'failures'
        ELSE 'reports' END
    WHERE status = 'paused';
    """,
    # 10: test copies of each campaign per UTC day, for `[campaigns] test_copies_per_day`
    # (the count is all the cap needs: no address is kept).
    """
    CREATE TABLE campaign_test_copies (
        campaign_id INTEGER NOT NULL REFERENCES campaigns (id),
        day         TEXT NOT NULL,
        count       INTEGER NOT NULL,
        PRIMARY KEY (campaign_id, day)
    ) WITHOUT ROWID;
    """,
    # 11: the customer's rights. An erased customer's row stays (consent events and the ledger
    # point to its id: pseudonymous counts) with every personal field blanked; `erasures`
    # records when, why and by whom, with no personal data; `suppression_entries` keeps a
    # keyed HMAC of the erased address, so an import that brings it back is opted out;
    # `erasure_imap_pending` holds the search terms of an IMAP clean-up not yet done, deleted
    # once it is (the only place an erased address stays, and only until then).
    """
    ALTER TABLE customers ADD COLUMN erased_at TEXT;
    CREATE TABLE suppression_entries (
        digest     TEXT PRIMARY KEY,
        created_at TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE erasures (
        id          INTEGER PRIMARY KEY,
        customer_id INTEGER NOT NULL REFERENCES customers (id),
        erased_at   TEXT NOT NULL,
        reason      TEXT NOT NULL,
        actor       TEXT NOT NULL
    );
    CREATE TABLE erasure_imap_pending (
        erasure_id      INTEGER PRIMARY KEY REFERENCES erasures (id),
        terms           TEXT NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        last_error      TEXT NOT NULL DEFAULT ''
    );
    """,
    # 12: the doctor's DNS and message checks the daemon runs at start, kept so the console
    # can show the last result (the counts, and each failure with its fix) after a restart.
    """
    CREATE TABLE doctor_runs (
        id        INTEGER PRIMARY KEY,
        ran_at    TEXT NOT NULL,
        passed    INTEGER NOT NULL,
        warned    INTEGER NOT NULL,
        failed    INTEGER NOT NULL,
        failures  TEXT NOT NULL  -- JSON: [{"name", "found", "fix"}], the failed checks
    );
    """,
    # 13: a reviewer may record an opt-in that a customer asked for by email, with that email
    # as the evidence: source 'email (reviewed)' (mail alone never opts anyone in). SQLite
    # cannot alter a CHECK: rebuild the table with its indexes and triggers (DROP TABLE's
    # implicit delete fires no trigger).
    """
    CREATE TABLE consent_events_13 (
        id          INTEGER PRIMARY KEY,
        customer_id INTEGER NOT NULL REFERENCES customers (id),
        at          TEXT NOT NULL,
        category    TEXT NOT NULL,
        old_value   INTEGER CHECK (old_value IN (0, 1)),
        new_value   INTEGER NOT NULL CHECK (new_value IN (0, 1)),
        source      TEXT NOT NULL CHECK (source IN ('import', 'email', 'operator',
                    'one-click', 'preference page', 'complaint', 'console',
                    'email (reviewed)')),
        reference   TEXT NOT NULL DEFAULT '',
        actor       TEXT NOT NULL DEFAULT ''
    );
    INSERT INTO consent_events_13 (id, customer_id, at, category, old_value, new_value, source,
                                   reference, actor)
        SELECT id, customer_id, at, category, old_value, new_value, source, reference, actor
        FROM consent_events;
    DROP TABLE consent_events;
    ALTER TABLE consent_events_13 RENAME TO consent_events;
    CREATE INDEX consent_events_customer ON consent_events (customer_id, id);
    CREATE INDEX consent_events_source_at ON consent_events (source, at);
    CREATE TRIGGER consent_events_are_never_updated BEFORE UPDATE ON consent_events
    BEGIN SELECT RAISE(ABORT, 'consent events are permanent'); END;
    CREATE TRIGGER consent_events_are_never_deleted BEFORE DELETE ON consent_events
    BEGIN SELECT RAISE(ABORT, 'consent events are permanent'); END;
    CREATE TRIGGER optouts_daily_count AFTER INSERT ON consent_events
    WHEN new.new_value = 0 BEGIN
        INSERT INTO optouts_daily (day, source, count) VALUES (substr(new.at, 1, 10), new.source, 1)
        ON CONFLICT (day, source) DO UPDATE SET count = count + 1;
    END;
    -- What a review item asks for beyond "who is this?": '' (an opt-out to match) or
    -- 'opt back in' (a reviewer may record the opt-in, with the message as evidence).
    ALTER TABLE review_items ADD COLUMN marked TEXT NOT NULL DEFAULT '';
    """,
    # 14: evidence on every consent event (see store.evidence for what each column proves).
    # The permanence trigger is replaced by two: naming any column but the personal evidence
    # in an UPDATE is refused, and the personal evidence (client address, user agent, the
    # request's From) may only be blanked, never rewritten: retention clears the web part,
    # erasure all of it, and nothing can alter what an event says.
    """
    ALTER TABLE consent_events ADD COLUMN message_id TEXT NOT NULL DEFAULT '';
    ALTER TABLE consent_events ADD COLUMN message_from TEXT NOT NULL DEFAULT '';
    ALTER TABLE consent_events ADD COLUMN message_date TEXT NOT NULL DEFAULT '';
    ALTER TABLE consent_events ADD COLUMN dkim TEXT NOT NULL DEFAULT '';
    ALTER TABLE consent_events ADD COLUMN spf TEXT NOT NULL DEFAULT '';
    ALTER TABLE consent_events ADD COLUMN dmarc TEXT NOT NULL DEFAULT '';
    ALTER TABLE consent_events ADD COLUMN client_address TEXT NOT NULL DEFAULT '';
    ALTER TABLE consent_events ADD COLUMN user_agent TEXT NOT NULL DEFAULT '';
    ALTER TABLE consent_events ADD COLUMN wording TEXT NOT NULL DEFAULT '';
    ALTER TABLE consent_events ADD COLUMN note TEXT NOT NULL DEFAULT '';
    ALTER TABLE consent_events ADD COLUMN review_item INTEGER;
    ALTER TABLE consent_events ADD COLUMN import_file TEXT NOT NULL DEFAULT '';
    ALTER TABLE consent_events ADD COLUMN import_line INTEGER;
    DROP TRIGGER consent_events_are_never_updated;
    CREATE TRIGGER consent_events_are_never_updated BEFORE UPDATE OF id, customer_id, at,
        category, old_value, new_value, source, reference, actor, message_id, message_date,
        dkim, spf, dmarc, wording, note, review_item, import_file, import_line
        ON consent_events
    BEGIN SELECT RAISE(ABORT, 'consent events are permanent'); END;
    CREATE TRIGGER consent_events_personal_evidence_is_only_cleared BEFORE UPDATE OF
        client_address, user_agent, message_from ON consent_events
    WHEN (new.client_address != '' AND new.client_address IS NOT old.client_address)
        OR (new.user_agent != '' AND new.user_agent IS NOT old.user_agent)
        OR (new.message_from != '' AND new.message_from IS NOT old.message_from)
    BEGIN SELECT RAISE(ABORT, 'consent events are permanent: evidence may only be cleared');
    END;
    """,
    # 15: several senders on one campaign. Each claimed row names the sender that claimed it
    # (`claimed_by`, the holder id of its lease `campaign:{id}:{holder}`), so the rows a dead
    # sender left in 'sending' go back to pending, and only those; `requeued` counts how often
    # a row came back that way, and claims take the least requeued first, so a recipient whose
    # message was in flight at a kill is sent after the fresh ones.
    """
    ALTER TABLE campaign_recipients ADD COLUMN claimed_by TEXT NOT NULL DEFAULT '';
    ALTER TABLE campaign_recipients ADD COLUMN requeued INTEGER NOT NULL DEFAULT 0;
    DROP INDEX campaign_recipients_status;
    CREATE INDEX campaign_recipients_status
        ON campaign_recipients (campaign_id, status, customer_id, requeued);
    """,
)

# PostgreSQL: a new database is created from `schema_postgresql.sql`, the schema as it stands
# at migration POSTGRESQL_BASELINE (no PostgreSQL installation predates it). Every migration
# after it is written for both engines: its SQLite script appended to MIGRATIONS above, and
# its PostgreSQL script here under the same number (a test holds the two lists level).
POSTGRESQL_BASELINE = 14
POSTGRESQL_MIGRATIONS: dict[int, str] = {
    15: """
    ALTER TABLE campaign_recipients ADD COLUMN claimed_by TEXT COLLATE "C" NOT NULL DEFAULT '';
    ALTER TABLE campaign_recipients ADD COLUMN requeued BIGINT NOT NULL DEFAULT 0;
    DROP INDEX campaign_recipients_status;
    CREATE INDEX campaign_recipients_status
        ON campaign_recipients (campaign_id, status, customer_id, requeued);
    -- The progress counters, kept once per statement instead of once per row: each claim or
    -- ledger flush changes each (campaign, status) counter once, taking the counter rows in
    -- key order, so senders on several hosts wait on each other only for one statement and
    -- never deadlock (per row, a claim locks 'pending' then 'sending' while a flush that
    -- returns a row to pending locks 'sending' then 'pending').
    DROP TRIGGER campaign_progress_insert ON campaign_recipients;
    DROP TRIGGER campaign_progress_update ON campaign_recipients;
    DROP TRIGGER campaign_progress_delete ON campaign_recipients;
    DROP FUNCTION campaign_progress_count();
    CREATE FUNCTION campaign_progress_count() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO campaign_progress AS p (campaign_id, status, n)
            SELECT campaign_id, status, count(*) FROM new_rows GROUP BY 1, 2 ORDER BY 1, 2
            ON CONFLICT (campaign_id, status) DO UPDATE SET n = p.n + excluded.n;
        ELSIF TG_OP = 'DELETE' THEN
            UPDATE campaign_progress AS p SET n = p.n - d.n
            FROM (SELECT campaign_id, status, count(*) AS n FROM old_rows GROUP BY 1, 2
                  ORDER BY 1, 2) d
            WHERE p.campaign_id = d.campaign_id AND p.status = d.status;
        ELSE
            INSERT INTO campaign_progress AS p (campaign_id, status, n)
            SELECT campaign_id, status, sum(n) FROM (
                SELECT campaign_id, status, 1 AS n FROM new_rows
                UNION ALL SELECT campaign_id, status, -1 FROM old_rows) d
            GROUP BY 1, 2 HAVING sum(n) <> 0 ORDER BY 1, 2
            ON CONFLICT (campaign_id, status) DO UPDATE SET n = p.n + excluded.n;
        END IF;
        RETURN NULL;
    END $$;
    CREATE TRIGGER campaign_progress_insert AFTER INSERT ON campaign_recipients
        REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION campaign_progress_count();
    CREATE TRIGGER campaign_progress_update AFTER UPDATE ON campaign_recipients
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION campaign_progress_count();
    CREATE TRIGGER campaign_progress_delete AFTER DELETE ON campaign_recipients
        REFERENCING OLD TABLE AS old_rows
        FOR EACH STATEMENT EXECUTE FUNCTION campaign_progress_count();
    """,
}
