import { useEffect, useId, useMemo, useRef, useState } from "react";
import type { DragEvent, FormEvent } from "react";
import { ApiProblem, api, call, idempotencyKey, putToStorage } from "../api/client";
import type { Model, UploadContentType } from "../api/client";
import { GenerationCard } from "../components/GenerationCard";
import { ProblemMessage } from "../components/problems";
import { Msg, useI18n } from "../i18n";
import type { MessageKey } from "../i18n";
import { Link } from "../router";
import {
  MAX_IMAGES,
  PROMPT_MAX_CHARS,
  checkUpload,
  cost,
  promptLength,
  shortfall,
  validateDraft,
} from "../rules";
import type { Problem } from "../rules";
import { useSession } from "../session";
import { useStore } from "../store";

function useProblemText() {
  const { t } = useI18n();
  return (problem: Problem | null | undefined) =>
    problem ? t(problem.key as MessageKey, problem.values) : null;
}

function ModelPicker({
  models,
  selected,
  onSelect,
}: {
  models: Model[];
  selected: string;
  onSelect: (id: string) => void;
}) {
  const { t } = useI18n();
  return (
    <fieldset className="field">
      <legend>{t("create.model")}</legend>
      <div className="models">
        {models.map((model) => (
          <label
            key={model.id}
            className={`model ${model.id === selected ? "selected" : ""} ${model.available ? "" : "disabled"}`}
            title={model.available ? undefined : t("create.unavailableHint")}
          >
            <input
              type="radio"
              name="model"
              value={model.id}
              checked={model.id === selected}
              disabled={!model.available}
              onChange={() => onSelect(model.id)}
              aria-label={model.name}
              aria-describedby={`model-${model.id}-price model-${model.id}-meta`}
            />
            <span className="model-name" aria-hidden="true">
              {model.name}
            </span>
            <span className="model-price" id={`model-${model.id}-price`}>
              {t("create.perImage", { credits: model.credits_per_image })}
            </span>
            <span className="model-meta" id={`model-${model.id}-meta`}>
              {model.available
                ? model.modes.map((m) => t(`create.modes.${m}`)).join(" · ")
                : t("create.unavailable")}
            </span>
          </label>
        ))}
      </div>
    </fieldset>
  );
}

function References({ model }: { model: Model }) {
  const { t } = useI18n();
  const text = useProblemText();
  const { references, setReferences, notify } = useStore();
  const [uploading, setUploading] = useState(0);
  const [problem, setProblem] = useState<string | null>(null);
  const [over, setOver] = useState(false);
  const input = useRef<HTMLInputElement>(null);
  const hintId = useId();

  const add = async (files: FileList | File[]) => {
    setProblem(null);
    for (const file of Array.from(files)) {
      const refused = checkUpload(file);
      if (refused) {
        setProblem(`${file.name}: ${text(refused)}`);
        continue;
      }
      setUploading((n) => n + 1);
      try {
        const upload = await call(
          api.POST("/v1/uploads", {
            body: { content_type: file.type as UploadContentType, size_bytes: file.size },
          }),
        );
        await putToStorage(upload.upload_url, upload.headers, file);
        const preview = URL.createObjectURL(file);
        setReferences((refs) => [...refs, { id: upload.id, preview }]);
      } catch (error) {
        notify("error", <ProblemMessage error={error} />);
      } finally {
        setUploading((n) => n - 1);
      }
    }
  };

  const onDrop = (event: DragEvent) => {
    event.preventDefault();
    setOver(false);
    if (event.dataTransfer.files.length) void add(event.dataTransfer.files);
  };

  return (
    <fieldset className="field">
      <legend>
        {t("create.references")}{" "}
        <span className="muted small">
          {t("create.refCount", { count: references.length, max: model.max_reference_images })}
        </span>
      </legend>
      {references.length > 0 && (
        <ul className="references">
          {references.map((ref, i) => (
            <li key={ref.id} className="reference">
              <img src={ref.preview} alt={t("create.referenceAlt", { index: i + 1 })} />
              <button
                type="button"
                className="remove"
                aria-label={t("create.removeReference", { index: i + 1 })}
                onClick={() => setReferences((refs) => refs.filter((r) => r.id !== ref.id))}
              >
                ×
              </button>
            </li>
          ))}
        </ul>
      )}
      <div
        className={`dropzone ${over ? "over" : ""}`}
        onDragOver={(e) => {
          e.preventDefault();
          setOver(true);
        }}
        onDragLeave={() => setOver(false)}
        onDrop={onDrop}
      >
        <span id={hintId}>{t("create.referencesHint")}</span>{" "}
        <button
          type="button"
          className="linklike"
          onClick={() => input.current?.click()}
          aria-describedby={hintId}
        >
          {t("create.choose")}
        </button>
        <input
          ref={input}
          type="file"
          accept="image/png,image/jpeg,image/webp"
          multiple
          hidden
          data-testid="reference-input"
          onChange={(e) => {
            if (e.target.files?.length) void add(e.target.files);
            e.target.value = "";
          }}
        />
        {uploading > 0 && <p className="muted small">{t("create.uploading")}</p>}
        {problem && (
          <p className="error-text" role="alert">
            {problem}
          </p>
        )}
      </div>
    </fieldset>
  );
}

export function Create() {
  const { t } = useI18n();
  const text = useProblemText();
  const { me, refresh } = useSession();
  const { models, generations, references, setReferences, upsert, notify } = useStore();
  const available = useMemo(() => (models ?? []).filter((m) => m.available), [models]);
  const [modelId, setModelId] = useState<string>("");
  const [prompt, setPrompt] = useState("");
  const [n, setN] = useState(1);
  const [chosenAspect, setAspect] = useState("1:1");
  const [touched, setTouched] = useState(false);
  const [sending, setSending] = useState(false);
  const [problem, setProblem] = useState<unknown>(null);
  // One key per submission of one draft: a double click or a retry of the same draft is
  // the same request, charged once; any change of the draft makes a new one.
  const key = useRef<string | null>(null);
  const promptId = useId();
  const countId = useId();

  // Until a person picks, the first available model; a ratio the model lacks falls back
  // to its first one.
  const model = (models ?? []).find((m) => m.id === modelId && m.available) ?? available[0];
  const aspect =
    model && !model.aspect_ratios.includes(chosenAspect)
      ? (model.aspect_ratios[0] ?? "1:1")
      : chosenAspect;
  useEffect(() => {
    key.current = null;
  }, [model, prompt, n, aspect, references]);

  if (!models || !me) return <p className="muted">{t("app.loading")}</p>;
  if (!model) return <p className="error-text">{t("error.unavailable")}</p>;

  const draft = { prompt, n, aspectRatio: aspect, references: references.map((r) => r.id) };
  const errors = validateDraft(draft, model);
  const warning = shortfall(model, n, me.credits);
  const total = cost(model, n);
  const length = promptLength(prompt);
  const mode = references.length > 0 ? "image-edit" : "text-to-image";

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setTouched(true);
    setProblem(null);
    if (Object.keys(errors).length > 0 || sending) return;
    key.current ??= idempotencyKey();
    setSending(true);
    try {
      const generation = await call(
        api.POST("/v1/generations", {
          body: {
            model: model.id,
            prompt: prompt.trim(),
            n,
            aspect_ratio: aspect,
            reference_images: draft.references,
          },
          headers: { "Idempotency-Key": key.current },
        }),
      );
      upsert(generation);
      notify("success", <Msg k="create.accepted" values={{ cost: generation.cost }} />);
      // Where it will appear: in view, so its images are seen arriving.
      requestAnimationFrame(() =>
        document
          .getElementById(`generation-${generation.id}`)
          ?.scrollIntoView({ block: "nearest", behavior: "smooth" }),
      );
      key.current = null;
      setPrompt("");
      setTouched(false);
      setReferences(() => []);
      await refresh();
    } catch (error) {
      setProblem(error);
      if (error instanceof ApiProblem && error.code === "insufficient_credits") void refresh();
    } finally {
      setSending(false);
    }
  };

  const shown = (field: keyof typeof errors) =>
    touched || field !== "prompt" ? text(errors[field]) : null;
  const recent = (generations ?? []).slice(0, 6);

  return (
    <div className="studio">
      <form
        className="card composer"
        onSubmit={(e) => void submit(e)}
        noValidate
        aria-labelledby="create-title"
      >
        <h1 id="create-title">{t("create.title")}</h1>
        <ModelPicker models={models} selected={model.id} onSelect={setModelId} />
        <div className="field">
          <div className="label-row">
            <label htmlFor={promptId}>{t("create.prompt")}</label>
            <span
              className={`muted small ${length > PROMPT_MAX_CHARS ? "error-text" : ""}`}
              aria-live="polite"
            >
              {t("create.promptCount", { length, max: PROMPT_MAX_CHARS })}
            </span>
          </div>
          <textarea
            id={promptId}
            value={prompt}
            rows={4}
            placeholder={t("create.promptPlaceholder")}
            onChange={(e) => setPrompt(e.target.value)}
            onBlur={() => prompt && setTouched(true)}
            aria-invalid={Boolean(shown("prompt"))}
            aria-describedby={shown("prompt") ? `${promptId}-error` : undefined}
          />
          {shown("prompt") && (
            <p id={`${promptId}-error`} className="error-text">
              {shown("prompt")}
            </p>
          )}
        </div>
        <div className="row wrap">
          <div className="field">
            <label htmlFor={countId}>{t("create.count")}</label>
            <select id={countId} value={n} onChange={(e) => setN(Number(e.target.value))}>
              {Array.from({ length: MAX_IMAGES }, (_, i) => i + 1).map((v) => (
                <option key={v} value={v}>
                  {v}
                </option>
              ))}
            </select>
          </div>
          <fieldset className="field grow">
            <legend>{t("create.aspect")}</legend>
            <div className="ratios">
              {model.aspect_ratios.map((ratio) => (
                <label key={ratio} className={`ratio ${ratio === aspect ? "selected" : ""}`}>
                  <input
                    type="radio"
                    name="aspect"
                    value={ratio}
                    checked={ratio === aspect}
                    onChange={() => setAspect(ratio)}
                  />
                  {ratio}
                </label>
              ))}
            </div>
          </fieldset>
        </div>
        <References model={model} />
        {shown("reference_images") && <p className="error-text">{shown("reference_images")}</p>}
        <div className="summary" aria-live="polite">
          <span>{t("create.mode", { mode: t(`create.modes.${mode}`) })}</span>
          <strong data-testid="cost">{t("create.cost", { cost: total })}</strong>
          {!warning && (
            <span className="muted">{t("create.balanceAfter", { after: me.credits - total })}</span>
          )}
        </div>
        {warning && (
          <p className="warning">
            {text(warning)} <Link href="/buy">{t("error.buyLink")}</Link>
          </p>
        )}
        {problem !== null && (
          <p className="error-text" role="alert">
            <ProblemMessage error={problem} />
          </p>
        )}
        <button type="submit" className="button primary wide" disabled={sending}>
          {sending ? t("create.submitting") : t("create.submit", { cost: total })}
        </button>
      </form>
      <section className="recent" aria-labelledby="recent-title">
        <div className="label-row">
          <h2 id="recent-title">{t("create.recent")}</h2>
          {recent.length > 0 && <Link href="/gallery">{t("create.seeAll")}</Link>}
        </div>
        {generations === null ? (
          <p className="muted">{t("app.loading")}</p>
        ) : recent.length === 0 ? (
          <p className="muted">{t("create.empty")}</p>
        ) : (
          <div className="list">
            {recent.map((g) => (
              <GenerationCard key={g.id} generation={g} />
            ))}
          </div>
        )}
      </section>
    </div>
  );
}
