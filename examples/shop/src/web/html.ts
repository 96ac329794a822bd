/**
 * HTML templating that escapes every interpolated value unless it is already {@link SafeHtml}:
 * pages are built only with the `html` tag, so output is escaped everywhere by construction.
 */
export class SafeHtml {
  readonly value: string
  constructor(value: string) {
    this.value = value
  }
  toString(): string {
    return this.value
  }
}

const ESCAPES: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
  '`': '&#96;',
}

export function escapeHtml(value: string): string {
  return value.replace(/[&<>"'`]/g, (c) => ESCAPES[c] ?? c)
}

type Interpolation =
  | SafeHtml
  | string
  | number
  | boolean
  | null
  | undefined
  | readonly Interpolation[]

function render(value: Interpolation): string {
  if (value === null || value === undefined || value === false) return ''
  if (value instanceof SafeHtml) return value.value
  if (Array.isArray(value)) return value.map(render).join('')
  return escapeHtml(String(value))
}

export function html(strings: TemplateStringsArray, ...values: Interpolation[]): SafeHtml {
  let out = strings[0] ?? ''
  for (let i = 0; i < values.length; i++)
    out += render(values[i] as Interpolation) + (strings[i + 1] ?? '')
  return new SafeHtml(out)
}

/** Money is kept in cents everywhere; this is the only place it becomes a string. */
export function money(cents: number): string {
  return `$${(cents / 100).toFixed(2)}`
}
