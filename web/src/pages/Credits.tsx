import { useEffect, useState } from "react";
import { api, call } from "../api/client";
import type { LedgerEntry } from "../api/client";
import { ProblemMessage } from "../components/problems";
import { useI18n } from "../i18n";
import { Link } from "../router";
import { useSession } from "../session";

export function Credits() {
  const { t, dateTime } = useI18n();
  const { me } = useSession();
  const [rows, setRows] = useState<LedgerEntry[] | null>(null);
  const [cursor, setCursor] = useState<string | null>(null);
  const [problem, setProblem] = useState<unknown>(null);
  const [loading, setLoading] = useState(false);
  const credits = me?.credits;

  const more = async (from: string) => {
    setLoading(true);
    try {
      const page = await call(
        api.GET("/v1/me/ledger", { params: { query: { limit: 50, cursor: from } } }),
      );
      setRows((all) => [...(all ?? []), ...page.items]);
      setCursor(page.next_cursor);
    } catch (error) {
      setProblem(error);
    } finally {
      setLoading(false);
    }
  };
  // The history is read again whenever the balance moves, so both always agree.
  useEffect(() => {
    let live = true;
    call(api.GET("/v1/me/ledger", { params: { query: { limit: 50 } } }))
      .then((page) => {
        if (!live) return;
        setRows(page.items);
        setCursor(page.next_cursor);
      })
      .catch((error: unknown) => live && setProblem(error));
    return () => {
      live = false;
    };
  }, [credits]);

  if (!me) return null;
  const total = (rows ?? []).reduce((sum, row) => sum + row.delta, 0);
  const complete = rows !== null && cursor === null;

  return (
    <section aria-labelledby="credits-title">
      <h1 id="credits-title">{t("credits.title")}</h1>
      <div className="card balance-card">
        <div>
          <div className="muted small">{t("credits.balance")}</div>
          <div className="balance" data-testid="balance">
            {t(Math.abs(me.credits) === 1 ? "nav.balanceOne" : "nav.balance", {
              credits: me.credits,
            })}
          </div>
        </div>
        <Link className="button primary" href="/buy">
          {t("credits.buy")}
        </Link>
      </div>
      {(me.expiring ?? []).length > 0 && (
        <div className="card">
          <h2>{t("credits.expiring")}</h2>
          <ul className="expiring">
            {(me.expiring ?? []).map((e) => (
              <li key={e.expires_at}>
                {t("credits.expiringRow", { credits: e.credits, date: dateTime(e.expires_at) })}
              </li>
            ))}
          </ul>
        </div>
      )}
      <h2>{t("credits.ledger")}</h2>
      {problem !== null && (
        <p className="error-text" role="alert">
          <ProblemMessage error={problem} />
        </p>
      )}
      {rows === null ? (
        <p className="muted">{t("app.loading")}</p>
      ) : rows.length === 0 ? (
        <p className="muted">{t("credits.empty")}</p>
      ) : (
        <div className="table-wrap">
          <table className="ledger">
            <thead>
              <tr>
                <th scope="col">{t("credits.when")}</th>
                <th scope="col">{t("credits.reason")}</th>
                <th scope="col">{t("credits.ref")}</th>
                <th scope="col" className="num">
                  {t("credits.delta")}
                </th>
              </tr>
            </thead>
            <tbody>
              {rows.map((row) => (
                <tr key={row.id}>
                  <td>{dateTime(row.created_at)}</td>
                  <td>
                    {t(`credits.reason.${row.reason}`)}
                    {row.expires_at && (
                      <div className="muted small">
                        {t("credits.expires", { date: dateTime(row.expires_at) })}
                      </div>
                    )}
                  </td>
                  <td className="ref">
                    {row.ref?.startsWith("gen_") ? (
                      <Link href={`/gallery/${row.ref}`}>{row.ref}</Link>
                    ) : (
                      (row.ref ?? t("date.never"))
                    )}
                  </td>
                  <td
                    className={`num ${row.delta < 0 ? "negative" : "positive"}`}
                    data-testid="delta"
                  >
                    {row.delta > 0 ? `+${row.delta}` : row.delta}
                  </td>
                </tr>
              ))}
            </tbody>
            {complete && (
              <tfoot>
                <tr>
                  <th scope="row" colSpan={3}>
                    {t("credits.total")}
                    {total === me.credits && (
                      <span className="muted"> · {t("credits.matches")}</span>
                    )}
                  </th>
                  <td className="num" data-testid="ledger-total">
                    {total}
                  </td>
                </tr>
              </tfoot>
            )}
          </table>
        </div>
      )}
      {cursor && (
        <div className="row center">
          <button
            type="button"
            className="button ghost"
            disabled={loading}
            onClick={() => void more(cursor)}
          >
            {t("credits.more")}
          </button>
        </div>
      )}
    </section>
  );
}
