package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/shadowgate/shadowgate/agent/awsapi"
	"github.com/shadowgate/shadowgate/store"
)

// The HTTP door: the control plane (service "iot", the operator's API:
// aws iot create-job …) and the jobs data plane (service "iot-jobs-data",
// a device's API over HTTPS) as awsapi routes. The two share paths (GET
// /things/{thingName}/jobs/{jobId} is DescribeJobExecution on both), so
// each route names the signing service that reaches it. Routes is a table
// with one row an operation: it reads the path, the query and the body into
// the API's shape (a reader), names what the key's policy must allow (a
// scope), and makes one call of the Service: an HTTP request and an MQTT
// one reach the same engine and cause the same notifications.
//
// Policy (the credentials file's shadowgate_actions and shadowgate_things):
// operations that read (Describe*, List*, Get*) need "read", the others
// "write". An operation on one thing (an execution, the whole data plane)
// needs that thing allowed; one on a job needs every target of the job
// allowed (so a job on a thing group, or a new one, needs a key without
// shadowgate_things); ListJobs, thing groups and job templates are the
// fleet's and need a key without shadowgate_things.

// Signing names of the two APIs (botocore's signingName).
var (
	ControlPlane = []string{"iot"}
	DataPlane    = []string{"iot-jobs-data"}
)

// httpTimeout bounds how long an HTTP request waits for its commit.
const httpTimeout = 30 * time.Second

// operation is one row of the HTTP API: an awsapi route whose handler
// reads the request (path parameters, query, body) into the Service
// call's argument, asks the key's policy, makes the call and answers its
// result (nil: an empty body).
func operation[Req, Resp any](s *Service, services []string, method, path, name string, access awsapi.Action,
	read func(r *reader) (Req, scope), call func(context.Context, Req) (Resp, error)) awsapi.Route {
	return awsapi.Route{Services: services, Method: method, Path: path, Operation: name, Handler: func(ctx context.Context, c *awsapi.Call) (*awsapi.Response, error) {
		ctx, cancel := context.WithTimeout(ctx, httpTimeout)
		defer cancel()
		r := &reader{c: c}
		req, sc := read(r)
		if r.err != nil {
			return nil, r.err
		}
		if err := s.allowed(ctx, c, access, sc); err != nil {
			return nil, httpError(err)
		}
		v, err := call(ctx, req)
		if err != nil {
			return nil, httpError(err)
		}
		if any(v) == nil {
			return &awsapi.Response{}, nil
		}
		return awsapi.JSON(v)
	}}
}

// noBody and emptyObject adapt a call that returns only an error: its
// answer is an empty body, or {}.
func noBody[Req any](f func(context.Context, Req) error) func(context.Context, Req) (any, error) {
	return func(ctx context.Context, r Req) (any, error) { return nil, f(ctx, r) }
}

func emptyObject[Req any](f func(context.Context, Req) error) func(context.Context, Req) (any, error) {
	return func(ctx context.Context, r Req) (any, error) { return struct{}{}, f(ctx, r) }
}

// httpError is err as the API answers it.
func httpError(err error) error {
	var ae *APIError
	var we *awsapi.Error
	switch {
	case errors.As(err, &we):
		return we
	case errors.As(err, &ae):
		e := &awsapi.Error{Type: ae.Type, Status: ae.Status, Message: ae.Msg}
		if ae.ResourceID != "" || ae.ResourceArn != "" {
			e.Fields = map[string]any{}
			if ae.ResourceID != "" {
				e.Fields["resourceId"] = ae.ResourceID
			}
			if ae.ResourceArn != "" {
				e.Fields["resourceArn"] = ae.ResourceArn
			}
		}
		return e
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled), errors.Is(err, store.ErrClosed):
		return awsapi.Errorf(awsapi.ServiceUnavailable, "%s", awsapi.MsgUnavailable)
	}
	return err
}

var forbidden = awsapi.Errorf(awsapi.Forbidden, "%s", awsapi.MsgForbidden)

// Routes are the jobs operations of both APIs, for an awsapi.Server: one
// row an operation (the signing service, method, path, name, the access it
// needs, how its request is read, the call).
func (s *Service) Routes() []awsapi.Route {
	get, put, post, del := http.MethodGet, http.MethodPut, http.MethodPost, http.MethodDelete
	cp, dp := ControlPlane, DataPlane
	read, write := awsapi.ActionRead, awsapi.ActionWrite
	return []awsapi.Route{
		operation(s, cp, put, "/jobs/{jobId}", "CreateJob", write, func(r *reader) (*CreateJobRequest, scope) {
			req := &CreateJobRequest{}
			id := r.id("jobId")
			r.body(req, "schedulingConfig", "destinationPackageVersions")
			req.JobID = id
			return req, scope{targets: req.Targets, byTargets: true}
		}, s.CreateJob),
		operation(s, cp, get, "/jobs/{jobId}", "DescribeJob", read, jobDocumentRead, s.DescribeJob),
		operation(s, cp, get, "/jobs", "ListJobs", read, func(r *reader) (*ListJobsRequest, scope) {
			r.unsupported("namespaceId", "thingGroupId")
			req := &ListJobsRequest{Status: JobStatus(r.enum("status", jobStatuses...)), TargetSelection: r.enum("targetSelection", Continuous, Snapshot),
				ThingGroupName: r.queryName("thingGroupName", checkName)}
			req.MaxResults, req.NextToken = r.page()
			return req, scope{}
		}, s.ListJobs),
		operation(s, cp, put, "/jobs/{jobId}/cancel", "CancelJob", write, func(r *reader) (*CancelJobRequest, scope) {
			req := &CancelJobRequest{}
			id, force := r.id("jobId"), r.flag("force")
			r.body(req)
			req.JobID, req.Force = id, force
			return req, scope{job: id}
		}, s.CancelJob),
		operation(s, cp, del, "/jobs/{jobId}", "DeleteJob", write, func(r *reader) (*DeleteJobRequest, scope) {
			id := r.id("jobId")
			r.unsupported("namespaceId")
			return &DeleteJobRequest{JobID: id, Force: r.flag("force")}, scope{job: id}
		}, noBody(s.DeleteJob)),
		operation(s, cp, get, "/jobs/{jobId}/job-document", "GetJobDocument", read, jobDocumentRead, s.GetJobDocument),
		operation(s, cp, get, "/jobs/{jobId}/things", "ListJobExecutionsForJob", read, func(r *reader) (*ListJobExecutionsRequest, scope) {
			req := &ListJobExecutionsRequest{JobID: r.id("jobId"), Status: ExecStatus(r.enum("status", execStatuses()...))}
			req.MaxResults, req.NextToken = r.page()
			return req, scope{job: req.JobID}
		}, s.ListJobExecutionsForJob),
		operation(s, cp, get, "/things/{thingName}/jobs", "ListJobExecutionsForThing", read, func(r *reader) (*ListJobExecutionsRequest, scope) {
			req := &ListJobExecutionsRequest{ThingName: r.name("thingName")}
			r.unsupported("namespaceId")
			req.Status = ExecStatus(r.enum("status", execStatuses()...))
			req.JobID = r.queryName("jobId", checkID)
			req.MaxResults, req.NextToken = r.page()
			return req, scope{thing: req.ThingName}
		}, s.ListJobExecutionsForThing),
		operation(s, cp, get, "/things/{thingName}/jobs/{jobId}", "DescribeJobExecution", read, func(r *reader) (*DescribeJobExecutionRequest, scope) {
			req := &DescribeJobExecutionRequest{ThingName: r.name("thingName"), JobID: r.id("jobId"), ExecutionNumber: r.integer("executionNumber", 0, 1<<53)}
			return req, scope{thing: req.ThingName}
		}, s.DescribeJobExecution),
		operation(s, cp, put, "/things/{thingName}/jobs/{jobId}/cancel", "CancelJobExecution", write, func(r *reader) (*CancelJobExecutionRequest, scope) {
			req := &CancelJobExecutionRequest{}
			thing, id, force := r.name("thingName"), r.id("jobId"), r.flag("force")
			r.body(req)
			req.JobID, req.ThingName, req.Force = id, thing, force
			return req, scope{thing: thing}
		}, noBody(s.CancelJobExecution)),
		operation(s, cp, del, "/things/{thingName}/jobs/{jobId}/executionNumber/{executionNumber}", "DeleteJobExecution", write,
			func(r *reader) (*DeleteJobExecutionRequest, scope) {
				req := &DeleteJobExecutionRequest{ThingName: r.name("thingName"), JobID: r.id("jobId")}
				r.unsupported("namespaceId")
				req.ExecutionNumber = r.number("executionNumber")
				req.Force = r.flag("force")
				return req, scope{thing: req.ThingName}
			}, noBody(s.DeleteJobExecution)),
		operation(s, cp, post, "/thing-groups/{thingGroupName}", "CreateThingGroup", write, func(r *reader) (*CreateThingGroupRequest, scope) {
			req := &CreateThingGroupRequest{}
			name := r.name("thingGroupName")
			r.body(req)
			req.ThingGroupName = name
			r.optional(req.ParentGroupName, "parentGroupName")
			return req, scope{}
		}, s.CreateThingGroup),
		operation(s, cp, get, "/thing-groups/{thingGroupName}", "DescribeThingGroup", read, onFleet("thingGroupName", (*reader).name), s.DescribeThingGroup),
		operation(s, cp, del, "/thing-groups/{thingGroupName}", "DeleteThingGroup", write, func(r *reader) (*DeleteThingGroupRequest, scope) {
			return &DeleteThingGroupRequest{ThingGroupName: r.name("thingGroupName"), ExpectedVersion: r.integer("expectedVersion", 0, 1<<53)}, scope{}
		}, emptyObject(s.DeleteThingGroup)),
		operation(s, cp, get, "/thing-groups", "ListThingGroups", read, func(r *reader) (*ListRequest, scope) {
			r.unsupported("parentGroup")
			r.notRecursive()
			req := &ListRequest{NamePrefixFilter: r.queryName("namePrefixFilter", checkName)}
			req.MaxResults, req.NextToken = r.page()
			return req, scope{}
		}, s.ListThingGroups),
		operation(s, cp, put, "/thing-groups/addThingToThingGroup", "AddThingToThingGroup", write, readMembership, emptyObject(s.AddThingToThingGroup)),
		operation(s, cp, put, "/thing-groups/removeThingFromThingGroup", "RemoveThingFromThingGroup", write, readMembership, emptyObject(s.RemoveThingFromThingGroup)),
		operation(s, cp, get, "/thing-groups/{thingGroupName}/things", "ListThingsInThingGroup", read, func(r *reader) (*ListRequest, scope) {
			req := &ListRequest{Name: r.name("thingGroupName")}
			r.notRecursive()
			req.MaxResults, req.NextToken = r.page()
			return req, scope{}
		}, s.ListThingsInThingGroup),
		operation(s, cp, put, "/job-templates/{jobTemplateId}", "CreateJobTemplate", write, func(r *reader) (*CreateJobTemplateRequest, scope) {
			req := &CreateJobTemplateRequest{}
			id := r.id("jobTemplateId")
			r.body(req, "maintenanceWindows", "destinationPackageVersions")
			req.JobTemplateID = id
			return req, scope{}
		}, s.CreateJobTemplate),
		operation(s, cp, get, "/job-templates/{jobTemplateId}", "DescribeJobTemplate", read, onFleet("jobTemplateId", (*reader).id), s.DescribeJobTemplate),
		operation(s, cp, get, "/job-templates", "ListJobTemplates", read, func(r *reader) (*ListRequest, scope) {
			req := &ListRequest{}
			req.MaxResults, req.NextToken = r.page()
			return req, scope{}
		}, s.ListJobTemplates),
		operation(s, cp, del, "/job-templates/{jobTemplateId}", "DeleteJobTemplate", write, onFleet("jobTemplateId", (*reader).id), noBody(s.DeleteJobTemplate)),

		operation(s, dp, get, "/things/{thingName}/jobs", "GetPendingJobExecutions", read, func(r *reader) (request, scope) {
			thing := r.name("thingName")
			return request{thing: thing, op: opGetPending}, scope{thing: thing}
		}, s.dataAnswer),
		operation(s, dp, get, "/things/{thingName}/jobs/{jobId}", "DescribeJobExecution", read, func(r *reader) (request, scope) {
			id := r.nextOrID("jobId")
			payload, _ := json.Marshal(struct {
				ExecutionNumber    *int64 `json:"executionNumber,omitempty"`
				IncludeJobDocument *bool  `json:"includeJobDocument,omitempty"`
			}{r.integer("executionNumber", 0, 1<<53), r.boolean("includeJobDocument")})
			r.unsupported("namespaceId")
			thing := r.name("thingName")
			return request{thing: thing, jobID: id, op: opDescribe, payload: payload}, scope{thing: thing}
		}, s.dataAnswer),
		// StartNextPendingJobExecution is PUT …/jobs/$next; a client may
		// send the '$' escaped, so the segment is matched as a parameter.
		operation(s, dp, put, "/things/{thingName}/jobs/{jobId}", "StartNextPendingJobExecution", write, func(r *reader) (request, scope) {
			if r.c.Params["jobId"] != "$next" {
				r.fail(awsapi.Errorf(awsapi.MethodNotAllowed, "%s", awsapi.MsgMethodNotAllowed))
			}
			r.unsupported("namespaceId")
			thing := r.name("thingName")
			return request{thing: thing, op: opStartNext, payload: r.c.Body}, scope{thing: thing}
		}, s.dataAnswer),
		operation(s, dp, post, "/things/{thingName}/jobs/{jobId}", "UpdateJobExecution", write, func(r *reader) (request, scope) {
			id := r.id("jobId")
			r.unsupported("namespaceId")
			thing := r.name("thingName")
			return request{thing: thing, jobID: id, op: opUpdate, payload: r.c.Body}, scope{thing: thing}
		}, s.dataAnswer),
	}
}

// jobDocumentRead reads DescribeJob and GetJobDocument: a job id and
// beforeSubstitution, which changes nothing (documents are kept as given:
// nothing is substituted).
func jobDocumentRead(r *reader) (string, scope) {
	id := r.id("jobId")
	r.boolean("beforeSubstitution")
	return id, scope{job: id}
}

// onFleet reads an operation of the fleet on one group (read: name) or
// template (read: id) named in the path.
func onFleet(param string, read func(r *reader, param string) string) func(r *reader) (string, scope) {
	return func(r *reader) (string, scope) { return read(r, param), scope{} }
}

// readMembership reads AddThingToThingGroup and RemoveThingFromThingGroup.
func readMembership(r *reader) (*ThingGroupMembershipRequest, scope) {
	req := &ThingGroupMembershipRequest{}
	r.body(req)
	r.optional(req.ThingGroupName, "thingGroupName")
	r.optional(req.ThingName, "thingName")
	return req, scope{}
}

// Validation, with AWS's messages for a member outside its constraint.

func validation(value, member, constraint string) *awsapi.Error {
	return awsapi.Errorf(awsapi.InvalidRequest, "1 validation error detected: Value '%s' at '%s' failed to satisfy constraint: %s", value, member, constraint)
}

func checkName(value, member string) *awsapi.Error {
	switch {
	case value == "":
		return validation(value, member, "Member must have length greater than or equal to 1")
	case len(value) > maxThingNameLen:
		return validation(value, member, fmt.Sprintf("Member must have length less than or equal to %d", maxThingNameLen))
	case !namePattern.MatchString(value):
		return validation(value, member, "Member must satisfy regular expression pattern: [a-zA-Z0-9:_-]+")
	}
	return nil
}

func checkID(value, member string) *awsapi.Error {
	switch {
	case value == "":
		return validation(value, member, "Member must have length greater than or equal to 1")
	case len(value) > maxJobIDLen:
		return validation(value, member, fmt.Sprintf("Member must have length less than or equal to %d", maxJobIDLen))
	case !idPattern.MatchString(value):
		return validation(value, member, "Member must satisfy regular expression pattern: [a-zA-Z0-9_-]+")
	}
	return nil
}

// reader reads a call's path parameters, query and body; the first value
// outside its constraint is the error of the request (the rest is read but
// no longer matters).
type reader struct {
	c   *awsapi.Call
	err *awsapi.Error
}

func (r *reader) fail(e *awsapi.Error) {
	if r.err == nil && e != nil {
		r.err = e
	}
}

// name and id are path parameters: a thing or group name, a job or
// template id.
func (r *reader) name(param string) string {
	v := r.c.Params[param]
	r.fail(checkName(v, param))
	return v
}

func (r *reader) id(param string) string {
	v := r.c.Params[param]
	r.fail(checkID(v, param))
	return v
}

// nextOrID is a job id or $next.
func (r *reader) nextOrID(param string) string {
	v := r.c.Params[param]
	if v != "$next" {
		r.fail(checkID(v, param))
	}
	return v
}

// number is a path parameter that is a whole number.
func (r *reader) number(param string) int64 {
	v := r.c.Params[param]
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		r.fail(validation(v, param, "Member must be a whole number"))
	}
	return n
}

// optional checks a name given in the body, when it is given.
func (r *reader) optional(value, member string) {
	if value != "" {
		r.fail(checkName(value, member))
	}
}

// queryName is a query parameter checked by check when present.
func (r *reader) queryName(name string, check func(value, member string) *awsapi.Error) string {
	vs, ok := r.c.Query[name]
	if !ok {
		return ""
	}
	r.fail(check(vs[0], name))
	return vs[0]
}

func (r *reader) integer(name string, lo, hi int64) *int64 {
	vs, ok := r.c.Query[name]
	if !ok {
		return nil
	}
	n, err := strconv.ParseInt(vs[0], 10, 64)
	switch {
	case err != nil:
		r.fail(validation(vs[0], name, "Member must be a whole number"))
	case n < lo:
		r.fail(validation(vs[0], name, fmt.Sprintf("Member must have value greater than or equal to %d", lo)))
	case n > hi:
		r.fail(validation(vs[0], name, fmt.Sprintf("Member must have value less than or equal to %d", hi)))
	default:
		return &n
	}
	return nil
}

func (r *reader) boolean(name string) *bool {
	vs, ok := r.c.Query[name]
	if !ok {
		return nil
	}
	b, err := strconv.ParseBool(vs[0])
	if err != nil {
		r.fail(validation(vs[0], name, "Member must be true or false"))
		return nil
	}
	return &b
}

// flag is a boolean query parameter that is false when absent.
func (r *reader) flag(name string) bool {
	b := r.boolean(name)
	return b != nil && *b
}

// notRecursive refuses recursive=true, which this service does not
// implement.
func (r *reader) notRecursive() {
	if r.flag("recursive") {
		r.fail(awsapi.Errorf(awsapi.InvalidRequest, "recursive is not supported by this service"))
	}
}

func (r *reader) enum(name string, allowed ...string) string {
	vs, ok := r.c.Query[name]
	if !ok {
		return ""
	}
	for _, a := range allowed {
		if vs[0] == a {
			return a
		}
	}
	r.fail(validation(vs[0], name, fmt.Sprintf("Member must satisfy enum value set: %v", allowed)))
	return ""
}

// page reads maxResults and nextToken.
func (r *reader) page() (int, string) {
	n := r.integer("maxResults", 1, maxPageResults)
	if n == nil {
		return 0, r.c.Query.Get("nextToken")
	}
	return int(*n), r.c.Query.Get("nextToken")
}

// unsupported refuses query parameters this service does not implement.
func (r *reader) unsupported(names ...string) {
	for _, n := range names {
		if _, ok := r.c.Query[n]; ok {
			r.fail(awsapi.Errorf(awsapi.InvalidRequest, "%s is not supported by this service", n))
		}
	}
}

// body reads the JSON body into v (an empty body is {}); members the API
// has but this service does not implement (named in refused) are refused
// rather than ignored, since ignoring them would change what the request
// does.
func (r *reader) body(v any, refused ...string) {
	b := bytes.TrimSpace(r.c.Body)
	if len(b) == 0 {
		b = []byte("{}")
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(b, &members); err != nil {
		r.fail(awsapi.Errorf(awsapi.InvalidRequest, "The request body must be a JSON object: %v", err))
		return
	}
	for _, n := range refused {
		if m, ok := members[n]; ok && string(m) != "null" {
			r.fail(awsapi.Errorf(awsapi.InvalidRequest, "%s is not supported by this service", n))
			return
		}
	}
	if err := json.Unmarshal(b, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			r.fail(awsapi.Errorf(awsapi.InvalidRequest, "Member %s has the wrong type: want %s", te.Field, te.Type))
			return
		}
		r.fail(awsapi.Errorf(awsapi.InvalidRequest, "Invalid request body: %v", err))
	}
}

var jobStatuses = []string{string(JobInProgress), string(JobCanceled), string(JobCompleted), string(JobDeletionInProgress), "SCHEDULED"}

func execStatuses() []string {
	out := make([]string, len(allStatuses))
	for i, s := range allStatuses {
		out[i] = string(s)
	}
	return out
}

// Policy.

// scope is what an operation acts on, for the policy: one thing, one job
// (every target of it), the targets of a new job, or (all empty) the
// fleet.
type scope struct {
	thing, job string
	targets    []string
	byTargets  bool
}

// allowed reports whether the caller may do a on sc.
func (s *Service) allowed(ctx context.Context, c *awsapi.Call, a awsapi.Action, sc scope) error {
	switch {
	case sc.thing != "":
		if !c.Allows(a, sc.thing) {
			return forbidden
		}
	case sc.job != "":
		return s.jobAllowed(ctx, c, a, sc.job)
	case sc.byTargets:
		if !s.targetsAllowed(c, a, sc.targets) {
			return forbidden
		}
	case !c.AllowsEveryThing(a):
		return forbidden
	}
	return nil
}

// jobAllowed reports whether the caller may do a on job id: on every thing,
// or on each target of the job, all of them things.
func (s *Service) jobAllowed(ctx context.Context, c *awsapi.Call, a awsapi.Action, id string) error {
	if c.AllowsEveryThing(a) {
		return nil
	}
	d, err := s.DescribeJob(ctx, id)
	if err != nil {
		return err
	}
	if !s.targetsAllowed(c, a, d.Job.Targets) {
		return forbidden
	}
	return nil
}

func (s *Service) targetsAllowed(c *awsapi.Call, a awsapi.Action, targets []string) bool {
	if c.AllowsEveryThing(a) {
		return true
	}
	for _, arn := range targets {
		kind, name, ok := parseArn(arn)
		if !ok || kind != "thing" || !c.Allows(a, name) {
			return false
		}
	}
	return true
}
