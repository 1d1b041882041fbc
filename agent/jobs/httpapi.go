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
// each route names the signing service that reaches it. Each handler reads
// the path, the query and the body into the API's shape, checks the key's
// policy, and makes one call of the Service: an HTTP request and an MQTT
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

// handler is one operation: the answer's shape (nil: an empty body) or an
// error.
type handler func(ctx context.Context, c *awsapi.Call) (any, error)

func route(services []string, method, path, op string, h handler) awsapi.Route {
	return awsapi.Route{Services: services, Method: method, Path: path, Operation: op, Handler: func(ctx context.Context, c *awsapi.Call) (*awsapi.Response, error) {
		ctx, cancel := context.WithTimeout(ctx, httpTimeout)
		defer cancel()
		v, err := h(ctx, c)
		if err != nil {
			return nil, httpError(err)
		}
		if v == nil {
			return &awsapi.Response{}, nil
		}
		return awsapi.JSON(v)
	}}
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

// Routes are the jobs operations of both APIs, for an awsapi.Server.
func (s *Service) Routes() []awsapi.Route {
	get, put, post, del := http.MethodGet, http.MethodPut, http.MethodPost, http.MethodDelete
	cp, dp := ControlPlane, DataPlane
	return []awsapi.Route{
		route(cp, put, "/jobs/{jobId}", "CreateJob", s.createJob),
		route(cp, get, "/jobs/{jobId}", "DescribeJob", s.describeJob),
		route(cp, get, "/jobs", "ListJobs", s.listJobs),
		route(cp, put, "/jobs/{jobId}/cancel", "CancelJob", s.cancelJob),
		route(cp, del, "/jobs/{jobId}", "DeleteJob", s.deleteJob),
		route(cp, get, "/jobs/{jobId}/job-document", "GetJobDocument", s.getJobDocument),
		route(cp, get, "/jobs/{jobId}/things", "ListJobExecutionsForJob", s.listExecutionsForJob),
		route(cp, get, "/things/{thingName}/jobs", "ListJobExecutionsForThing", s.listExecutionsForThing),
		route(cp, get, "/things/{thingName}/jobs/{jobId}", "DescribeJobExecution", s.describeExecution),
		route(cp, put, "/things/{thingName}/jobs/{jobId}/cancel", "CancelJobExecution", s.cancelExecution),
		route(cp, del, "/things/{thingName}/jobs/{jobId}/executionNumber/{executionNumber}", "DeleteJobExecution", s.deleteExecution),
		route(cp, post, "/thing-groups/{thingGroupName}", "CreateThingGroup", s.createGroup),
		route(cp, get, "/thing-groups/{thingGroupName}", "DescribeThingGroup", s.describeGroup),
		route(cp, del, "/thing-groups/{thingGroupName}", "DeleteThingGroup", s.deleteGroup),
		route(cp, get, "/thing-groups", "ListThingGroups", s.listGroups),
		route(cp, put, "/thing-groups/addThingToThingGroup", "AddThingToThingGroup", s.membership(true)),
		route(cp, put, "/thing-groups/removeThingFromThingGroup", "RemoveThingFromThingGroup", s.membership(false)),
		route(cp, get, "/thing-groups/{thingGroupName}/things", "ListThingsInThingGroup", s.listThingsInGroup),
		route(cp, put, "/job-templates/{jobTemplateId}", "CreateJobTemplate", s.createTemplate),
		route(cp, get, "/job-templates/{jobTemplateId}", "DescribeJobTemplate", s.describeTemplate),
		route(cp, get, "/job-templates", "ListJobTemplates", s.listTemplates),
		route(cp, del, "/job-templates/{jobTemplateId}", "DeleteJobTemplate", s.deleteTemplate),

		route(dp, get, "/things/{thingName}/jobs", "GetPendingJobExecutions", s.dataGetPending),
		route(dp, get, "/things/{thingName}/jobs/{jobId}", "DescribeJobExecution", s.dataDescribe),
		// StartNextPendingJobExecution is PUT …/jobs/$next; a client may
		// send the '$' escaped, so the segment is matched as a parameter.
		route(dp, put, "/things/{thingName}/jobs/{jobId}", "StartNextPendingJobExecution", s.dataStartNext),
		route(dp, post, "/things/{thingName}/jobs/{jobId}", "UpdateJobExecution", s.dataUpdate),
	}
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

// param is a path parameter, checked as a thing/group name or a job or
// template id.
func param(c *awsapi.Call, name string) (string, *awsapi.Error) {
	v := c.Params[name]
	switch name {
	case "thingName", "thingGroupName":
		return v, checkName(v, name)
	}
	return v, checkID(v, name)
}

func queryInt(c *awsapi.Call, name string, lo, hi int64) (*int64, *awsapi.Error) {
	vs, ok := c.Query[name]
	if !ok {
		return nil, nil
	}
	n, err := strconv.ParseInt(vs[0], 10, 64)
	switch {
	case err != nil:
		return nil, validation(vs[0], name, "Member must be a whole number")
	case n < lo:
		return nil, validation(vs[0], name, fmt.Sprintf("Member must have value greater than or equal to %d", lo))
	case n > hi:
		return nil, validation(vs[0], name, fmt.Sprintf("Member must have value less than or equal to %d", hi))
	}
	return &n, nil
}

func queryBool(c *awsapi.Call, name string) (*bool, *awsapi.Error) {
	vs, ok := c.Query[name]
	if !ok {
		return nil, nil
	}
	b, err := strconv.ParseBool(vs[0])
	if err != nil {
		return nil, validation(vs[0], name, "Member must be true or false")
	}
	return &b, nil
}

func queryEnum(c *awsapi.Call, name string, allowed ...string) (string, *awsapi.Error) {
	vs, ok := c.Query[name]
	if !ok {
		return "", nil
	}
	for _, a := range allowed {
		if vs[0] == a {
			return a, nil
		}
	}
	return "", validation(vs[0], name, fmt.Sprintf("Member must satisfy enum value set: %v", allowed))
}

// paging reads maxResults and nextToken.
func paging(c *awsapi.Call) (int, string, *awsapi.Error) {
	n, e := queryInt(c, "maxResults", 1, maxPageResults)
	if e != nil || n == nil {
		return 0, c.Query.Get("nextToken"), e
	}
	return int(*n), c.Query.Get("nextToken"), nil
}

// unsupported refuses query parameters this service does not implement.
func unsupported(c *awsapi.Call, names ...string) *awsapi.Error {
	for _, n := range names {
		if _, ok := c.Query[n]; ok {
			return awsapi.Errorf(awsapi.InvalidRequest, "%s is not supported by this service", n)
		}
	}
	return nil
}

// body reads the JSON body into v (an empty body is {}); members the API
// has but this service does not implement (named in refused) are refused
// rather than ignored, since ignoring them would change what the request
// does.
func body(c *awsapi.Call, v any, refused ...string) *awsapi.Error {
	b := bytes.TrimSpace(c.Body)
	if len(b) == 0 {
		b = []byte("{}")
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(b, &members); err != nil {
		return awsapi.Errorf(awsapi.InvalidRequest, "The request body must be a JSON object: %v", err)
	}
	for _, n := range refused {
		if m, ok := members[n]; ok && string(m) != "null" {
			return awsapi.Errorf(awsapi.InvalidRequest, "%s is not supported by this service", n)
		}
	}
	if err := json.Unmarshal(b, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return awsapi.Errorf(awsapi.InvalidRequest, "Member %s has the wrong type: want %s", te.Field, te.Type)
		}
		return awsapi.Errorf(awsapi.InvalidRequest, "Invalid request body: %v", err)
	}
	return nil
}

// Policy.

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

func fleet(c *awsapi.Call, a awsapi.Action) error {
	if !c.AllowsEveryThing(a) {
		return forbidden
	}
	return nil
}

// The control plane.

func (s *Service) createJob(ctx context.Context, c *awsapi.Call) (any, error) {
	id, e := param(c, "jobId")
	if e != nil {
		return nil, e
	}
	var req CreateJobRequest
	if e := body(c, &req, "schedulingConfig", "destinationPackageVersions"); e != nil {
		return nil, e
	}
	req.JobID = id
	if !s.targetsAllowed(c, awsapi.ActionWrite, req.Targets) {
		return nil, forbidden
	}
	return s.CreateJob(ctx, &req)
}

func (s *Service) describeJob(ctx context.Context, c *awsapi.Call) (any, error) {
	id, e := param(c, "jobId")
	if e != nil {
		return nil, e
	}
	if _, e := queryBool(c, "beforeSubstitution"); e != nil {
		return nil, e // documents are kept as given: nothing is substituted
	}
	if err := s.jobAllowed(ctx, c, awsapi.ActionRead, id); err != nil {
		return nil, err
	}
	return s.DescribeJob(ctx, id)
}

func (s *Service) getJobDocument(ctx context.Context, c *awsapi.Call) (any, error) {
	id, e := param(c, "jobId")
	if e != nil {
		return nil, e
	}
	if _, e := queryBool(c, "beforeSubstitution"); e != nil {
		return nil, e
	}
	if err := s.jobAllowed(ctx, c, awsapi.ActionRead, id); err != nil {
		return nil, err
	}
	return s.GetJobDocument(ctx, id)
}

var jobStatuses = []string{string(JobInProgress), string(JobCanceled), string(JobCompleted), string(JobDeletionInProgress), "SCHEDULED"}

func execStatuses() []string {
	out := make([]string, len(allStatuses))
	for i, s := range allStatuses {
		out[i] = string(s)
	}
	return out
}

func (s *Service) listJobs(ctx context.Context, c *awsapi.Call) (any, error) {
	if e := unsupported(c, "namespaceId", "thingGroupId"); e != nil {
		return nil, e
	}
	var req ListJobsRequest
	st, e := queryEnum(c, "status", jobStatuses...)
	if e != nil {
		return nil, e
	}
	if req.TargetSelection, e = queryEnum(c, "targetSelection", Continuous, Snapshot); e != nil {
		return nil, e
	}
	if g, ok := c.Query["thingGroupName"]; ok {
		if e := checkName(g[0], "thingGroupName"); e != nil {
			return nil, e
		}
		req.ThingGroupName = g[0]
	}
	if req.MaxResults, req.NextToken, e = paging(c); e != nil {
		return nil, e
	}
	req.Status = JobStatus(st)
	if err := fleet(c, awsapi.ActionRead); err != nil {
		return nil, err
	}
	return s.ListJobs(ctx, &req)
}

func (s *Service) cancelJob(ctx context.Context, c *awsapi.Call) (any, error) {
	id, e := param(c, "jobId")
	if e != nil {
		return nil, e
	}
	force, e := queryBool(c, "force")
	if e != nil {
		return nil, e
	}
	var req CancelJobRequest
	if e := body(c, &req); e != nil {
		return nil, e
	}
	req.JobID, req.Force = id, force != nil && *force
	if err := s.jobAllowed(ctx, c, awsapi.ActionWrite, id); err != nil {
		return nil, err
	}
	return s.CancelJob(ctx, &req)
}

func (s *Service) deleteJob(ctx context.Context, c *awsapi.Call) (any, error) {
	id, e := param(c, "jobId")
	if e != nil {
		return nil, e
	}
	if e := unsupported(c, "namespaceId"); e != nil {
		return nil, e
	}
	force, e := queryBool(c, "force")
	if e != nil {
		return nil, e
	}
	if err := s.jobAllowed(ctx, c, awsapi.ActionWrite, id); err != nil {
		return nil, err
	}
	return nil, s.DeleteJob(ctx, &DeleteJobRequest{JobID: id, Force: force != nil && *force})
}

func (s *Service) listExecutionsForJob(ctx context.Context, c *awsapi.Call) (any, error) {
	id, e := param(c, "jobId")
	if e != nil {
		return nil, e
	}
	req := ListJobExecutionsRequest{JobID: id}
	st, e := queryEnum(c, "status", execStatuses()...)
	if e != nil {
		return nil, e
	}
	if req.MaxResults, req.NextToken, e = paging(c); e != nil {
		return nil, e
	}
	req.Status = ExecStatus(st)
	if err := s.jobAllowed(ctx, c, awsapi.ActionRead, id); err != nil {
		return nil, err
	}
	return s.ListJobExecutionsForJob(ctx, &req)
}

func (s *Service) listExecutionsForThing(ctx context.Context, c *awsapi.Call) (any, error) {
	thing, e := param(c, "thingName")
	if e != nil {
		return nil, e
	}
	if e := unsupported(c, "namespaceId"); e != nil {
		return nil, e
	}
	req := ListJobExecutionsRequest{ThingName: thing}
	st, e := queryEnum(c, "status", execStatuses()...)
	if e != nil {
		return nil, e
	}
	if j, ok := c.Query["jobId"]; ok {
		if e := checkID(j[0], "jobId"); e != nil {
			return nil, e
		}
		req.JobID = j[0]
	}
	if req.MaxResults, req.NextToken, e = paging(c); e != nil {
		return nil, e
	}
	req.Status = ExecStatus(st)
	if !c.Allows(awsapi.ActionRead, thing) {
		return nil, forbidden
	}
	return s.ListJobExecutionsForThing(ctx, &req)
}

func (s *Service) describeExecution(ctx context.Context, c *awsapi.Call) (any, error) {
	thing, e := param(c, "thingName")
	if e != nil {
		return nil, e
	}
	id, e := param(c, "jobId")
	if e != nil {
		return nil, e
	}
	n, e := queryInt(c, "executionNumber", 0, 1<<53)
	if e != nil {
		return nil, e
	}
	if !c.Allows(awsapi.ActionRead, thing) {
		return nil, forbidden
	}
	return s.DescribeJobExecution(ctx, &DescribeJobExecutionRequest{JobID: id, ThingName: thing, ExecutionNumber: n})
}

func (s *Service) cancelExecution(ctx context.Context, c *awsapi.Call) (any, error) {
	thing, e := param(c, "thingName")
	if e != nil {
		return nil, e
	}
	id, e := param(c, "jobId")
	if e != nil {
		return nil, e
	}
	force, e := queryBool(c, "force")
	if e != nil {
		return nil, e
	}
	var req CancelJobExecutionRequest
	if e := body(c, &req); e != nil {
		return nil, e
	}
	req.JobID, req.ThingName, req.Force = id, thing, force != nil && *force
	if !c.Allows(awsapi.ActionWrite, thing) {
		return nil, forbidden
	}
	return nil, s.CancelJobExecution(ctx, &req)
}

func (s *Service) deleteExecution(ctx context.Context, c *awsapi.Call) (any, error) {
	thing, e := param(c, "thingName")
	if e != nil {
		return nil, e
	}
	id, e := param(c, "jobId")
	if e != nil {
		return nil, e
	}
	if e := unsupported(c, "namespaceId"); e != nil {
		return nil, e
	}
	num := c.Params["executionNumber"]
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 {
		return nil, validation(num, "executionNumber", "Member must be a whole number")
	}
	force, e := queryBool(c, "force")
	if e != nil {
		return nil, e
	}
	if !c.Allows(awsapi.ActionWrite, thing) {
		return nil, forbidden
	}
	return nil, s.DeleteJobExecution(ctx, &DeleteJobExecutionRequest{JobID: id, ThingName: thing, ExecutionNumber: n, Force: force != nil && *force})
}

func (s *Service) createGroup(ctx context.Context, c *awsapi.Call) (any, error) {
	name, e := param(c, "thingGroupName")
	if e != nil {
		return nil, e
	}
	var req CreateThingGroupRequest
	if e := body(c, &req); e != nil {
		return nil, e
	}
	req.ThingGroupName = name
	if req.ParentGroupName != "" {
		if e := checkName(req.ParentGroupName, "parentGroupName"); e != nil {
			return nil, e
		}
	}
	if err := fleet(c, awsapi.ActionWrite); err != nil {
		return nil, err
	}
	return s.CreateThingGroup(ctx, &req)
}

func (s *Service) describeGroup(ctx context.Context, c *awsapi.Call) (any, error) {
	name, e := param(c, "thingGroupName")
	if e != nil {
		return nil, e
	}
	if err := fleet(c, awsapi.ActionRead); err != nil {
		return nil, err
	}
	return s.DescribeThingGroup(ctx, name)
}

func (s *Service) deleteGroup(ctx context.Context, c *awsapi.Call) (any, error) {
	name, e := param(c, "thingGroupName")
	if e != nil {
		return nil, e
	}
	v, e := queryInt(c, "expectedVersion", 0, 1<<53)
	if e != nil {
		return nil, e
	}
	if err := fleet(c, awsapi.ActionWrite); err != nil {
		return nil, err
	}
	return struct{}{}, s.DeleteThingGroup(ctx, &DeleteThingGroupRequest{ThingGroupName: name, ExpectedVersion: v})
}

func (s *Service) listGroups(ctx context.Context, c *awsapi.Call) (any, error) {
	if e := unsupported(c, "parentGroup"); e != nil {
		return nil, e
	}
	if r, e := queryBool(c, "recursive"); e != nil || r != nil && *r {
		return nil, cmpErr(e, awsapi.Errorf(awsapi.InvalidRequest, "recursive is not supported by this service"))
	}
	var req ListRequest
	if p, ok := c.Query["namePrefixFilter"]; ok {
		if e := checkName(p[0], "namePrefixFilter"); e != nil {
			return nil, e
		}
		req.NamePrefixFilter = p[0]
	}
	var e *awsapi.Error
	if req.MaxResults, req.NextToken, e = paging(c); e != nil {
		return nil, e
	}
	if err := fleet(c, awsapi.ActionRead); err != nil {
		return nil, err
	}
	return s.ListThingGroups(ctx, &req)
}

func cmpErr(a, b *awsapi.Error) *awsapi.Error {
	if a != nil {
		return a
	}
	return b
}

func (s *Service) membership(add bool) handler {
	return func(ctx context.Context, c *awsapi.Call) (any, error) {
		var req ThingGroupMembershipRequest
		if e := body(c, &req); e != nil {
			return nil, e
		}
		if req.ThingGroupName != "" {
			if e := checkName(req.ThingGroupName, "thingGroupName"); e != nil {
				return nil, e
			}
		}
		if req.ThingName != "" {
			if e := checkName(req.ThingName, "thingName"); e != nil {
				return nil, e
			}
		}
		if err := fleet(c, awsapi.ActionWrite); err != nil {
			return nil, err
		}
		if add {
			return struct{}{}, s.AddThingToThingGroup(ctx, &req)
		}
		return struct{}{}, s.RemoveThingFromThingGroup(ctx, &req)
	}
}

func (s *Service) listThingsInGroup(ctx context.Context, c *awsapi.Call) (any, error) {
	name, e := param(c, "thingGroupName")
	if e != nil {
		return nil, e
	}
	if r, e := queryBool(c, "recursive"); e != nil || r != nil && *r {
		return nil, cmpErr(e, awsapi.Errorf(awsapi.InvalidRequest, "recursive is not supported by this service"))
	}
	req := ListRequest{Name: name}
	if req.MaxResults, req.NextToken, e = paging(c); e != nil {
		return nil, e
	}
	if err := fleet(c, awsapi.ActionRead); err != nil {
		return nil, err
	}
	return s.ListThingsInThingGroup(ctx, &req)
}

func (s *Service) createTemplate(ctx context.Context, c *awsapi.Call) (any, error) {
	id, e := param(c, "jobTemplateId")
	if e != nil {
		return nil, e
	}
	var req CreateJobTemplateRequest
	if e := body(c, &req, "maintenanceWindows", "destinationPackageVersions"); e != nil {
		return nil, e
	}
	req.JobTemplateID = id
	if err := fleet(c, awsapi.ActionWrite); err != nil {
		return nil, err
	}
	return s.CreateJobTemplate(ctx, &req)
}

func (s *Service) describeTemplate(ctx context.Context, c *awsapi.Call) (any, error) {
	id, e := param(c, "jobTemplateId")
	if e != nil {
		return nil, e
	}
	if err := fleet(c, awsapi.ActionRead); err != nil {
		return nil, err
	}
	return s.DescribeJobTemplate(ctx, id)
}

func (s *Service) listTemplates(ctx context.Context, c *awsapi.Call) (any, error) {
	var req ListRequest
	var e *awsapi.Error
	if req.MaxResults, req.NextToken, e = paging(c); e != nil {
		return nil, e
	}
	if err := fleet(c, awsapi.ActionRead); err != nil {
		return nil, err
	}
	return s.ListJobTemplates(ctx, &req)
}

func (s *Service) deleteTemplate(ctx context.Context, c *awsapi.Call) (any, error) {
	id, e := param(c, "jobTemplateId")
	if e != nil {
		return nil, e
	}
	if err := fleet(c, awsapi.ActionWrite); err != nil {
		return nil, err
	}
	return nil, s.DeleteJobTemplate(ctx, id)
}
