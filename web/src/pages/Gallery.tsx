import { useEffect, useState } from "react";
import { ApiProblem, api, call } from "../api/client";
import type { Generation } from "../api/client";
import { GenerationCard } from "../components/GenerationCard";
import { ProblemMessage } from "../components/problems";
import { useI18n } from "../i18n";
import { Link } from "../router";
import { useStore } from "../store";

export function Gallery() {
  const { t } = useI18n();
  const { generations, nextCursor, loadMore, notify } = useStore();
  const [loading, setLoading] = useState(false);
  const more = async () => {
    setLoading(true);
    try {
      await loadMore();
    } catch (error) {
      notify("error", <ProblemMessage error={error} />);
    } finally {
      setLoading(false);
    }
  };
  return (
    <section aria-labelledby="gallery-title">
      <h1 id="gallery-title">{t("gallery.title")}</h1>
      {generations === null ? (
        <p className="muted">{t("app.loading")}</p>
      ) : generations.length === 0 ? (
        <p className="muted">
          {t("gallery.empty")} <Link href="/">{t("nav.create")}</Link>
        </p>
      ) : (
        <div className="grid">
          {generations.map((g) => (
            <GenerationCard key={g.id} generation={g} />
          ))}
        </div>
      )}
      {nextCursor && (
        <div className="row center">
          <button
            type="button"
            className="button ghost"
            onClick={() => void more()}
            disabled={loading}
          >
            {loading ? t("app.loading") : t("gallery.more")}
          </button>
        </div>
      )}
    </section>
  );
}

export function GenerationPage({ id }: { id: string }) {
  const { t } = useI18n();
  const { generations, upsert } = useStore();
  const known = generations?.find((g) => g.id === id);
  const [missing, setMissing] = useState<unknown>(null);
  const [fetched, setFetched] = useState<Generation | null>(null);
  useEffect(() => {
    if (known) return;
    let live = true;
    call(api.GET("/v1/generations/{id}", { params: { path: { id } } }))
      .then((g) => {
        if (!live) return;
        setFetched(g);
        upsert(g);
      })
      .catch((error) => live && setMissing(error));
    return () => {
      live = false;
    };
  }, [id, known, upsert]);
  const generation = known ?? fetched;
  return (
    <section>
      <p>
        <Link href="/gallery">← {t("gen.back")}</Link>
      </p>
      {generation ? (
        <GenerationCard generation={generation} full />
      ) : missing ? (
        <p className="error-text">
          {missing instanceof ApiProblem && missing.status === 404 ? (
            t("gen.notFound")
          ) : (
            <ProblemMessage error={missing} />
          )}
        </p>
      ) : (
        <p className="muted">{t("app.loading")}</p>
      )}
    </section>
  );
}
