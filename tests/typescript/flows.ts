// The main flows of a front end, written against the types openapi-typescript generates from the
// document (tests/test_typescript_client.py generates them into generated/ and compiles this with
// `tsc --strict`). It is compiled, not run: the check is that every body a client reads is typed.
import createClient from "openapi-fetch";

import type { components, operations, paths } from "./generated/guanxi";

type Schemas = components["schemas"];
type Problem = Schemas["Problem"];

// Every operation's 2xx bodies, whatever their media type.
type SuccessBodies<Operation> = Operation extends { responses: infer Responses }
    ? {
          [Status in keyof Responses]: Status extends 200 | 201 | 202 | 207
              ? Responses[Status] extends { content: infer Content }
                  ? Content[keyof Content]
                  : never
              : never;
      }[keyof Responses]
    : never;
// The operations of which some 2xx body is `unknown` (an untyped schema): there must be none, and the
// compiler names each one that is ("does not satisfy the constraint 'never'").
type UntypedOperations = {
    [Id in keyof operations]: unknown extends SuccessBodies<operations[Id]> ? Id : never;
}[keyof operations];
type None<Names extends never> = Names;
export type EveryBodyIsTyped = None<UntypedOperations>;

const api = createClient<paths>({ baseUrl: "http://localhost:8000" });

function problem(error: Problem): string {
    const fields = (error.errors ?? []).map((bad) => `${bad.loc.join(".")}: ${bad.msg}`);
    const duplicate = error.existing_id ? ` (existing: ${error.existing_id} by ${error.field ?? "?"})` : "";
    const stale = error.current_version !== undefined && error.current_version !== null ? ` (now v${error.current_version})` : "";
    return `${error.status} ${error.title}: ${error.detail}${duplicate}${stale} ${fields.join("; ")}`;
}

export async function signIn(workspace: string, email: string, password: string): Promise<string> {
    const { data, error } = await api.POST("/api/v1/auth/token", {
        body: { grant_type: "password", workspace, email, password },
    });
    if (error) throw new Error(problem(error));
    const token: string = data.access_token;
    api.use({
        onRequest({ request }) {
            request.headers.set("Authorization", `Bearer ${token}`);
            return request;
        },
    });
    return token;
}

export async function createCustomer(name: string, key: string): Promise<[Schemas["CustomerOut"], string]> {
    const { data, error, response } = await api.POST("/api/v1/customers", {
        params: { header: { "Idempotency-Key": key } },
        body: { name, emails: [`${key}@example.com`] },
    });
    if (error) throw new Error(problem(error));
    const replayed = response.headers.get("Idempotent-Replayed") === "true";
    const location = response.headers.get("Location") ?? `/api/v1/customers/${data.id}`;
    console.log(`${replayed ? "replayed" : "created"} ${location}`);
    return [data, response.headers.get("ETag") ?? `"${data.version}"`];
}

export async function listAllCustomers(): Promise<Schemas["CustomerOut"][]> {
    const customers: Schemas["CustomerOut"][] = [];
    let cursor: string | undefined;
    do {
        const { data, error } = await api.GET("/api/v1/customers", { params: { query: { limit: 100, cursor } } });
        if (error) throw new Error(problem(error));
        customers.push(...data.items);
        cursor = data.next_cursor ?? undefined;
    } while (cursor);
    return customers;
}

export async function renameCustomer(id: string, name: string): Promise<Schemas["CustomerOut"]> {
    const read = await api.GET("/api/v1/customers/{customer_id}", { params: { path: { customer_id: id } } });
    if (read.error) throw new Error(problem(read.error));
    const etag = read.response.headers.get("ETag") ?? `"${read.data.version}"`;
    const { data, error } = await api.PATCH("/api/v1/customers/{customer_id}", {
        params: { path: { customer_id: id }, header: { "if-match": etag } },
        body: { name },
    });
    if (error) {
        // 412: someone else wrote first; `current_version` is the version to read again.
        throw new Error(problem(error));
    }
    return data;
}

export async function openTicket(customer: Schemas["CustomerOut"], subject: string): Promise<number> {
    const { data, error } = await api.POST("/api/v1/tickets", {
        params: { header: { "Idempotency-Key": `ticket-${customer.id}` } },
        body: { customer_id: customer.id, type: "inquiry", channel: "phone", subject },
    });
    if (error) throw new Error(problem(error));
    const ticket: Schemas["TicketOut"] = data;
    return ticket.number;
}

export async function exportCustomers(): Promise<string> {
    const created = await api.POST("/api/v1/exports", { body: { format: "csv" } });
    if (created.error) throw new Error(problem(created.error));
    const { data, error } = await api.GET("/api/v1/exports/{job_id}/download", {
        params: { path: { job_id: created.data.id } },
        parseAs: "text",
    });
    if (error) throw new Error(problem(error));
    return data;
}
