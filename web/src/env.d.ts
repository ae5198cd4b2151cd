/// <reference types="vite/client" />

interface ImportMetaEnv {
  /** The API's base URL when it is not the app's own origin (deployed builds). */
  readonly VITE_API_URL?: string;
}
