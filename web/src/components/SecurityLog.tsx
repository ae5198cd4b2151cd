import { useEffect, useId, useState } from "react";
import { api, call } from "../api/client";
import type { AuditEntry } from "../api/client";
import { useI18n } from "../i18n";
import { actorLabel, describe } from "../securityLog";
import { useStore } from "../store";
import { deviceSummary } from "../userAgent";
import { ProblemMessage } from "./problems";

const PAGE = 20;

/** The account's security log, newest first, a page at a time. */
export function SecurityLog() {
  const { t } = useI18n();
  const titleId = useId();
  const [entries, setEntries] = useState<AuditEntry[] | null>(null);
  const [cursor, setCursor] = useState<string | null>(null);
  const [loading, setLoading] = useState(false);
  const [problem, setProblem] = useState<unknown>(null);
  const [attempt, setAttempt] = useState(0);

  useEffect(() => {
    let live = true;
    call(api.GET("/v1/me/security-log", { params: { query: { limit: PAGE } } }))
      .then((page) => {
        if (!live) return;
        setEntries(page.items);
        setCursor(page.next_cursor);
      })
      .catch((error: unknown) => live && setProblem(error));
    return () => {
      live = false;
    };
  }, [attempt]);

  const retry = () => {
    setProblem(null);
    setAttempt((n) => n + 1);
  };

  const more = async (from: string) => {
    setLoading(true);
    setProblem(null);
    try {
      const page = await call(
        api.GET("/v1/me/security-log", { params: { query: { limit: PAGE, cursor: from } } }),
      );
      // Each id once, whatever two pages hold: ids are the list's keys.
      setEntries((shown) => {
        const seen = new Set((shown ?? []).map((e) => e.id));
        return [...(shown ?? []), ...page.items.filter((e) => !seen.has(e.id))];
      });
      setCursor(page.next_cursor);
    } catch (error) {
      setProblem(error);
    } finally {
      setLoading(false);
    }
  };

  return (
    <section className="card" aria-labelledby={titleId}>
      <h2 id={titleId}>{t("security.title")}</h2>
      <p className="muted">{t("security.lead")}</p>
      {entries === null ? (
        !problem && <p className="muted">{t("app.loading")}</p>
      ) : entries.length === 0 ? (
        <p className="muted">{t("security.empty")}</p>
      ) : (
        <ol className="audit" aria-labelledby={titleId} aria-busy={loading}>
          {entries.map((entry) => (
            <Entry key={entry.id} entry={entry} />
          ))}
        </ol>
      )}
      {problem !== null && (
        <p className="error-text" role="alert">
          <ProblemMessage error={problem} />
        </p>
      )}
      {entries === null && problem !== null ? (
        <div className="row">
          <button type="button" className="button ghost" onClick={retry}>
            {t("security.retry")}
          </button>
        </div>
      ) : cursor ? (
        <div className="row center">
          <button
            type="button"
            className="button ghost"
            disabled={loading}
            onClick={() => void more(cursor)}
          >
            {t("security.more")}
          </button>
        </div>
      ) : (
        entries !== null &&
        entries.length > PAGE && <p className="muted small audit-end">{t("security.end")}</p>
      )}
    </section>
  );
}

function Entry({ entry }: { entry: AuditEntry }) {
  const { t, dateTime } = useI18n();
  const { products } = useStore();
  const { sentence, known, note, ids } = describe(entry, t, products);
  const actor = actorLabel(entry.actor, t);
  const device = deviceSummary(entry.user_agent, {
    clientOnOs: (client, os) => t("security.device", { client, os }),
    browserOnOs: (os) => t("security.deviceOs", { os }),
  });
  return (
    <li className="audit-entry">
      <p className="audit-what">
        {known ? <Marked text={sentence} ids={ids} /> : <code>{sentence}</code>}
      </p>
      {note && <p className="audit-note">{note}</p>}
      <p className="audit-meta">
        <time dateTime={entry.created_at}>{dateTime(entry.created_at)}</time>
        {actor && <span className="badge audit-actor">{actor}</span>}
        {entry.ip && <span>{t("security.ip", { ip: entry.ip })}</span>}
        {device && <span title={entry.user_agent ?? undefined}>{device}</span>}
      </p>
    </li>
  );
}

/** `text` with each of `ids` in a code font (a key prefix reads `l` apart from `I`). */
function Marked({ text, ids }: { text: string; ids: string[] }) {
  if (ids.length === 0) return text;
  const escaped = ids.map((id) => id.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  const parts = text.split(new RegExp(`(${escaped.join("|")})`));
  return parts.map((part, i) => (i % 2 === 1 ? <code key={i}>{part}</code> : part));
}
