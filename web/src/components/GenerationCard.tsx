import { useState } from "react";
import { ApiProblem, api, call } from "../api/client";
import type { Generation, GenerationImage } from "../api/client";
import { Msg, useI18n } from "../i18n";
import { Link, useRouter } from "../router";
import { useSession } from "../session";
import { isOpen, useStore } from "../store";
import { Dialog } from "./Dialog";
import { ProblemMessage } from "./problems";

function ratioStyle(aspect: string) {
  const [w, h] = aspect.split(":").map(Number);
  return w && h ? { aspectRatio: `${w} / ${h}` } : { aspectRatio: "1 / 1" };
}

/** Saves an image under a readable name (the presigned URL's own name is a key). */
async function download(generation: Generation, image: GenerationImage) {
  const extension = image.content_type.split("/")[1] ?? "png";
  const name = `${generation.id}-${image.index + 1}.${extension}`;
  try {
    const blob = await (await fetch(image.url)).blob();
    const url = URL.createObjectURL(blob);
    const a = Object.assign(document.createElement("a"), { href: url, download: name });
    a.click();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  } catch {
    // Storage without CORS for this origin: the browser can still open the image itself.
    window.open(image.url, "_blank", "noopener");
  }
}

export function StatusBadge({ generation }: { generation: Generation }) {
  const { t } = useI18n();
  return (
    <span className={`badge badge-${generation.status}`} role="status">
      {isOpen(generation) && <span className="spinner" aria-hidden="true" />}
      {t(`gen.status.${generation.status}`)}
    </span>
  );
}

/** One generation: what was asked, its state, and its images as they arrive. */
export function GenerationCard({
  generation,
  full = false,
}: {
  generation: Generation;
  full?: boolean;
}) {
  const { t, dateTime } = useI18n();
  const { setReferences, remove, notify, models, upsert } = useStore();
  const { refresh } = useSession();
  const { navigate } = useRouter();
  const [confirming, setConfirming] = useState(false);
  const [deleting, setDeleting] = useState(false);
  const [stopping, setStopping] = useState(false);
  const model = models?.find((m) => m.id === generation.model);
  const pending = isOpen(generation) ? generation.n - generation.images.length : 0;

  const editImage = (image: GenerationImage) => {
    const id = `${generation.id}/${image.index}`;
    setReferences((refs) =>
      refs.some((r) => r.id === id) ? refs : [...refs, { id, preview: image.url }],
    );
    navigate("/");
  };

  // Queued: canceled and refunded at once. Running: the worker stops after the image it is
  // making, keeps what it made and refunds the rest.
  const cancel = async () => {
    setStopping(true);
    try {
      const after = await call(
        api.POST("/v1/generations/{id}/cancel", { params: { path: { id: generation.id } } }),
      );
      upsert(after);
      if (!isOpen(after)) void refresh().catch(() => undefined);
    } catch (error) {
      notify("error", <ProblemMessage error={error} />);
    } finally {
      setStopping(false);
    }
  };

  const confirmDelete = async () => {
    setDeleting(true);
    try {
      await call(api.DELETE("/v1/generations/{id}", { params: { path: { id: generation.id } } }));
      setConfirming(false);
      remove(generation.id);
      notify("success", <Msg k="gen.deleted" />);
      if (full) navigate("/gallery");
    } catch (error) {
      setConfirming(false);
      if (error instanceof ApiProblem && error.status === 404) remove(generation.id);
      notify("error", <ProblemMessage error={error} />);
    } finally {
      setDeleting(false);
    }
  };

  return (
    <article
      id={`generation-${generation.id}`}
      className={`card generation ${full ? "generation-full" : ""}`}
      aria-label={generation.prompt}
    >
      <div className={`images images-${Math.min(generation.n, 4)}`}>
        {generation.images.map((image) => (
          <figure key={image.index} className="image" style={ratioStyle(generation.aspect_ratio)}>
            {full ? (
              <img
                src={image.url}
                alt={generation.prompt}
                width={image.width}
                height={image.height}
              />
            ) : (
              <Link href={`/gallery/${generation.id}`} aria-label={t("gen.open")}>
                <img
                  src={image.url}
                  alt={generation.prompt}
                  width={image.width}
                  height={image.height}
                  loading="lazy"
                  decoding="async"
                />
              </Link>
            )}
            <figcaption className="image-actions">
              <button type="button" className="chip" onClick={() => editImage(image)}>
                {t("gen.edit")}
              </button>
              <button
                type="button"
                className="chip"
                onClick={() => void download(generation, image)}
              >
                {t("gen.download")}
              </button>
            </figcaption>
          </figure>
        ))}
        {Array.from({ length: pending }, (_, i) => (
          <div
            key={`pending-${i}`}
            className="image placeholder"
            style={ratioStyle(generation.aspect_ratio)}
            aria-label={t("gen.placeholder", { index: generation.images.length + i + 1 })}
          />
        ))}
      </div>
      <div className="generation-body">
        <div className="generation-head">
          <StatusBadge generation={generation} />
          <span className="muted small">{dateTime(generation.created_at)}</span>
        </div>
        <p className={full ? "prompt" : "prompt clamp"}>{generation.prompt}</p>
        <p className="muted small">
          {t("gen.meta", {
            model: model?.name ?? generation.model,
            n: generation.n,
            ratio: generation.aspect_ratio,
            cost: generation.cost,
          })}
          {generation.reference_images.length > 0 &&
            ` · ${t("gen.editing", { count: generation.reference_images.length })}`}
        </p>
        {generation.status === "failed" && generation.error && (
          <p className="error-text">
            {t("gen.failedMessage", { message: generation.error.message })}
          </p>
        )}
        {(generation.status === "succeeded" || generation.status === "canceled") &&
          generation.images.length < generation.n && (
            <p className="muted small">
              {t("gen.partial", { made: generation.images.length, asked: generation.n })}
            </p>
          )}
        {generation.refunded_credits > 0 && (
          <p className="refund">{t("gen.refunded", { credits: generation.refunded_credits })}</p>
        )}
        <div className="row">
          {!full && (
            <Link className="button ghost small-button" href={`/gallery/${generation.id}`}>
              {t("gen.open")}
            </Link>
          )}
          {isOpen(generation) && (
            <button
              type="button"
              className="button ghost small-button"
              onClick={() => void cancel()}
              disabled={stopping || generation.cancel_requested}
              aria-label={t("gen.stopLabel")}
            >
              {generation.cancel_requested || stopping ? t("gen.stopping") : t("gen.stop")}
            </button>
          )}
          {!isOpen(generation) && (
            <button
              type="button"
              className="button ghost danger small-button"
              onClick={() => setConfirming(true)}
            >
              {t("gen.delete")}
            </button>
          )}
        </div>
      </div>
      <Dialog open={confirming} title={t("gen.deleteTitle")} onClose={() => setConfirming(false)}>
        <p>{t("gen.deleteBody")}</p>
        <div className="row end">
          <button
            type="button"
            className="button ghost"
            onClick={() => setConfirming(false)}
            autoFocus
          >
            {t("gen.cancel")}
          </button>
          <button
            type="button"
            className="button danger"
            onClick={() => void confirmDelete()}
            disabled={deleting}
          >
            {t("gen.confirmDelete")}
          </button>
        </div>
      </Dialog>
    </article>
  );
}
