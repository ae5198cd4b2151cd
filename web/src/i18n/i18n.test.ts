import { describe, expect, it } from "vitest";
import { readFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { TABLES, format, initialLanguage } from "./index";
import { en } from "./en";

const placeholders = (text: string) => [...text.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();

describe("every language has every string", () => {
  for (const [lang, table] of Object.entries(TABLES)) {
    it(`${lang} has exactly the English keys, none empty`, () => {
      expect(Object.keys(table).sort()).toEqual(Object.keys(en).sort());
      for (const [key, text] of Object.entries(table)) expect(text.trim(), key).not.toBe("");
    });

    it(`${lang} fills the same placeholders as English`, () => {
      for (const [key, text] of Object.entries(en))
        expect(placeholders(table[key as keyof typeof en]), key).toEqual(placeholders(text));
    });
  }

  it("every key the code names exists (no string is shown as its key)", () => {
    const files: string[] = [];
    const walk = (dir: string) => {
      for (const name of readdirSync(dir)) {
        const path = join(dir, name);
        if (statSync(path).isDirectory()) walk(path);
        else if (/\.tsx?$/.test(name) && !name.endsWith(".test.ts") && !name.endsWith(".gen.ts"))
          files.push(path);
      }
    };
    walk(join(__dirname, ".."));
    const used = new Set<string>();
    for (const file of files) {
      const text = readFileSync(file, "utf8");
      for (const m of text.matchAll(/\bt\("([a-zA-Z-]+\.[\w.-]+)"/g)) used.add(m[1] ?? "");
      for (const m of text.matchAll(/\bk="([a-zA-Z-]+\.[\w.-]+)"/g)) used.add(m[1] ?? "");
    }
    expect(used.size).toBeGreaterThan(50);
    for (const key of used) expect(Object.keys(en), key).toContain(key);
  });
});

describe("the language", () => {
  it("is the saved choice first, then the browser's, then English", () => {
    expect(initialLanguage("zh-CN", ["en-US"])).toBe("zh-CN");
    expect(initialLanguage(null, ["zh-TW", "en"])).toBe("zh-CN");
    expect(initialLanguage(null, ["fr-FR", "en-GB"])).toBe("en");
    expect(initialLanguage(null, ["de"])).toBe("en");
    expect(initialLanguage("klingon", ["zh"])).toBe("zh-CN");
  });

  it("fills placeholders and leaves an unknown one visible", () => {
    expect(format("{a} of {b}", { a: 1, b: 2 })).toBe("1 of 2");
    expect(format("{a} of {c}", { a: 1 })).toBe("1 of {c}");
  });
});
