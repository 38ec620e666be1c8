// A TypeScript user's client, generated from openapi.json as the README says:
//   openapi-typescript openapi.json -o build/schema.d.ts   (types)
//   openapi-fetch                                          (typed fetch calls)
// It must compile under `tsc --strict` without casts, then run against a live
// server given as the first argument; it prints what it saw as one JSON line
// for tests/clients/test_typescript_client.py to compare with the model.
import createClient from "openapi-fetch";
import type { components, paths } from "../build/schema.js";

type Patient = components["schemas"]["PatientFeatures"];

const baseUrl = process.argv[2];
if (baseUrl === undefined) {
  throw new Error("usage: node build/js/src/client.js BASE_URL");
}
const client = createClient<paths>({ baseUrl });

// Named enums for the coded features: a typo in a code is a compile error.
const chestPain: components["schemas"]["ChestPainType"] = 4;
const thal: components["schemas"]["Thal"] = 3;
const patient: Patient = {
  age: 54,
  sex: 1,
  chest_pain_type: chestPain,
  resting_blood_pressure: 130,
  serum_cholesterol: 245,
  fasting_blood_sugar: 0,
  resting_ecg: 2,
  max_heart_rate: 150,
  exercise_induced_angina: 0,
  st_depression: 0.8,
  st_slope: 2,
  num_major_vessels: 0,
  thal,
};

function fail(what: string, detail: unknown): never {
  throw new Error(`${what}: ${JSON.stringify(detail)}`);
}

const one = await client.POST("/predict", { body: patient });
if (one.data === undefined) fail("predict", one.error);
const probability: number = one.data.probability;
const label: string = one.data.label;

const batch = await client.POST("/predict/batch", { body: { patients: [patient, patient] } });
if (batch.data === undefined) fail("predict_batch", batch.error);

// Out of range: the error is typed as FastAPI's validation error, naming the field.
const refused = await client.POST("/predict", { body: { ...patient, age: 650 } });
if (refused.error === undefined) fail("age 650 was accepted", refused.data);
// 401/413/415 carry a sentence, 422 a list of problems: the union is real.
const problems = Array.isArray(refused.error.detail) ? refused.error.detail : [];
const refusedLocations = problems.map((d) => d.loc.join("."));

const card = await client.GET("/model");
if (card.data === undefined) fail("model", card.error);

// A typed JSON operation of its own: no `MetricsReport | string` to narrow.
const metrics = await client.GET("/metrics/summary");
if (metrics.data === undefined) fail("metrics summary", metrics.error);
const predictionsTotal: number = metrics.data.serving.predictions_total;

const health = await client.GET("/health");
const ready = await client.GET("/ready");

// The Open Inference Protocol, through the same typed client.
const infer = await client.POST("/v2/models/heart/infer", {
  body: {
    id: "ts-1",
    inputs: [
      {
        name: "features",
        shape: [1, 13],
        datatype: "FP64",
        data: [[54, 1, 4, 130, 245, 0, 2, 150, 0, 0.8, 2, 0, 3]],
      },
    ],
  },
});
if (infer.data === undefined) fail("oip infer", infer.error);
const oipProbability = infer.data.outputs.find((o) => o.name === "probability")?.data[0];

console.log(
  JSON.stringify({
    probability,
    label,
    batch: batch.data.predictions.map((p) => p.probability),
    refused_status: refused.response.status,
    refused_locations: refusedLocations,
    model_version: card.data.model_version,
    predictions_total: predictionsTotal,
    health: health.data?.status,
    ready: ready.data?.status,
    oip_id: infer.data.id,
    oip_probability: oipProbability,
  }),
);
