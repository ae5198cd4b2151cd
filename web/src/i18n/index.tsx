import { createContext, useCallback, useContext, useEffect, useMemo, useState } from "react";
import type { ReactNode } from "react";
import { en } from "./en";
import type { MessageKey, Messages } from "./en";
import { zhCN } from "./zh-CN";

export type { MessageKey } from "./en";
export const LANGUAGES = { en: "English", "zh-CN": "简体中文" } as const;
export type Language = keyof typeof LANGUAGES;
export const TABLES: Record<Language, Messages> = { en, "zh-CN": zhCN };

const STORAGE_KEY = "nb.language";

/** The saved choice, else the browser's preferred language, else English. */
export function initialLanguage(saved: string | null, preferred: readonly string[]): Language {
  if (saved === "en" || saved === "zh-CN") return saved;
  for (const tag of preferred) {
    const lower = tag.toLowerCase();
    if (lower.startsWith("zh")) return "zh-CN";
    if (lower.startsWith("en")) return "en";
  }
  return "en";
}

/** `{name}` placeholders filled from `values`; a missing value stays visible. */
export function format(text: string, values?: Record<string, string | number>): string {
  if (!values) return text;
  return text.replace(/\{(\w+)\}/g, (whole, name: string) =>
    name in values ? String(values[name]) : whole,
  );
}

export type Translate = (key: MessageKey, values?: Record<string, string | number>) => string;

type I18n = {
  lang: Language;
  setLang: (lang: Language) => void;
  t: Translate;
  date: (iso: string) => string;
  dateTime: (iso: string) => string;
  money: (minor: number, currency: string) => string;
};

const Context = createContext<I18n | null>(null);

function readSaved(): string | null {
  try {
    return localStorage.getItem(STORAGE_KEY);
  } catch {
    return null;
  }
}

export function I18nProvider({ children }: { children: ReactNode }) {
  const [lang, setLangState] = useState<Language>(() =>
    initialLanguage(readSaved(), navigator.languages ?? [navigator.language]),
  );
  useEffect(() => {
    document.documentElement.lang = lang;
  }, [lang]);
  const setLang = useCallback((next: Language) => {
    setLangState(next);
    try {
      localStorage.setItem(STORAGE_KEY, next);
    } catch {
      // Private windows may refuse storage: the choice then lasts for this page only.
    }
  }, []);
  const value = useMemo<I18n>(() => {
    const table = TABLES[lang];
    const dates = new Intl.DateTimeFormat(lang, { dateStyle: "medium" });
    const dateTimes = new Intl.DateTimeFormat(lang, { dateStyle: "medium", timeStyle: "short" });
    return {
      lang,
      setLang,
      t: (key, values) => format(table[key], values),
      date: (iso) => dates.format(new Date(iso)),
      dateTime: (iso) => dateTimes.format(new Date(iso)),
      money: (minor, currency) => {
        const money = new Intl.NumberFormat(lang, {
          style: "currency",
          currency: currency.toUpperCase(),
        });
        // Minor units: cents for USD, whole yen for JPY.
        const digits = money.resolvedOptions().maximumFractionDigits ?? 2;
        return money.format(minor / 10 ** digits);
      },
    };
  }, [lang, setLang]);
  return <Context.Provider value={value}>{children}</Context.Provider>;
}

/** A translated sentence that follows the language when it is switched later. */
export function Msg({ k, values }: { k: MessageKey; values?: Record<string, string | number> }) {
  return <>{useI18n().t(k, values)}</>;
}

export function useI18n(): I18n {
  const value = useContext(Context);
  if (!value) throw new Error("useI18n outside I18nProvider");
  return value;
}
