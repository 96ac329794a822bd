/**
 * The Standard Schema interface (https://standardschema.dev), copied as its authors ask, so
 * zod, valibot, arktype and others plug in without a dependency. Not exported by the package: the
 * reference shows it where it is used.
 *
 * @inline
 */
export interface StandardSchemaV1<Input = unknown, Output = Input> {
  /** The Standard Schema properties. */
  readonly '~standard': StandardSchemaV1Props<Input, Output>
}

/**
 * The properties of a {@link StandardSchemaV1}.
 *
 * @inline
 */
export interface StandardSchemaV1Props<Input = unknown, Output = Input> {
  /** The version of the standard. */
  readonly version: 1
  /** The library that made the schema. */
  readonly vendor: string
  /** Validates a value. */
  readonly validate: (
    value: unknown,
  ) => StandardSchemaV1Result<Output> | Promise<StandardSchemaV1Result<Output>>
  /** Inferred types, for TypeScript only. */
  readonly types?: StandardSchemaV1Types<Input, Output> | undefined
}

/**
 * The inferred types of a {@link StandardSchemaV1} (for TypeScript only).
 *
 * @inline
 */
export interface StandardSchemaV1Types<Input = unknown, Output = Input> {
  /** The type the schema accepts. */
  readonly input: Input
  /** The type validation produces. */
  readonly output: Output
}

/**
 * The result of {@link StandardSchemaV1Props.validate}.
 *
 * @inline
 */
export type StandardSchemaV1Result<Output> =
  | StandardSchemaV1SuccessResult<Output>
  | StandardSchemaV1FailureResult

/**
 * A {@link StandardSchemaV1Result} of a valid value.
 *
 * @inline
 */
export interface StandardSchemaV1SuccessResult<Output> {
  /** The validated (possibly transformed) value. */
  readonly value: Output
  /** Absent on success. */
  readonly issues?: undefined
}

/**
 * A {@link StandardSchemaV1Result} of an invalid value.
 *
 * @inline
 */
export interface StandardSchemaV1FailureResult {
  /** What is wrong with the value. */
  readonly issues: ReadonlyArray<StandardSchemaV1Issue>
}

/**
 * One problem a schema found.
 *
 * @inline
 */
export interface StandardSchemaV1Issue {
  /** What is wrong. */
  readonly message: string
  /** Where (keys of the path). */
  readonly path?: ReadonlyArray<PropertyKey | StandardSchemaV1PathSegment> | undefined
}

/**
 * One key of a {@link StandardSchemaV1Issue.path}, in its object form.
 *
 * @inline
 */
export interface StandardSchemaV1PathSegment {
  /** The key. */
  readonly key: PropertyKey
}
