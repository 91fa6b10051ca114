import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import Ajv, { type ValidateFunction } from 'ajv';

/** docs/report.schema.json, compiled once: every report a test makes can be checked against it. */
let compiled: ValidateFunction | undefined;

export function reportValidator(): ValidateFunction {
  if (compiled === undefined) {
    const file = path.resolve(__dirname, '..', '..', '..', 'docs', 'report.schema.json');
    const schema = JSON.parse(fs.readFileSync(file, 'utf8'));
    compiled = new Ajv({ allErrors: true, strict: true, strictRequired: false }).compile(schema);
  }
  return compiled;
}

/** Fails with ajv's errors when `report` (as its JSON) does not match the schema. */
export function assertValidReport(report: unknown, label: string): void {
  const validate = reportValidator();
  const ok = validate(JSON.parse(JSON.stringify(report)));
  assert.ok(ok, `${label}: ${JSON.stringify(validate.errors, null, 1)}`);
}
