package jobs

import "net/http"

// The control plane's JSON shapes, as the AWS IoT API (service "iot",
// rest-json, 2015-05-28) has them. A field the API carries in the path or
// the query string is tagged json:"-" and says where it comes from; an HTTP
// handler fills it before the call, so that each operation is one call of
// the Service.
//
//	PUT    /jobs/{jobId}                            CreateJob
//	GET    /jobs/{jobId}                            DescribeJob
//	GET    /jobs?status&targetSelection&thingGroupName&maxResults&nextToken   ListJobs
//	PUT    /jobs/{jobId}/cancel?force               CancelJob
//	DELETE /jobs/{jobId}?force                      DeleteJob
//	GET    /jobs/{jobId}/job-document               GetJobDocument
//	GET    /jobs/{jobId}/things?status&maxResults&nextToken                   ListJobExecutionsForJob
//	GET    /things/{thingName}/jobs?status&jobId&maxResults&nextToken         ListJobExecutionsForThing
//	GET    /things/{thingName}/jobs/{jobId}?executionNumber                   DescribeJobExecution
//	PUT    /things/{thingName}/jobs/{jobId}/cancel?force                      CancelJobExecution
//	DELETE /things/{thingName}/jobs/{jobId}/executionNumber/{executionNumber}?force  DeleteJobExecution
//	POST   /thing-groups/{thingGroupName}           CreateThingGroup
//	GET    /thing-groups/{thingGroupName}           DescribeThingGroup
//	DELETE /thing-groups/{thingGroupName}?expectedVersion                     DeleteThingGroup
//	GET    /thing-groups?maxResults&nextToken&namePrefixFilter                ListThingGroups
//	PUT    /thing-groups/addThingToThingGroup       AddThingToThingGroup
//	PUT    /thing-groups/removeThingFromThingGroup  RemoveThingFromThingGroup
//	GET    /thing-groups/{thingGroupName}/things?maxResults&nextToken         ListThingsInThingGroup
//	PUT    /job-templates/{jobTemplateId}           CreateJobTemplate
//	GET    /job-templates/{jobTemplateId}           DescribeJobTemplate
//	GET    /job-templates?maxResults&nextToken      ListJobTemplates
//	DELETE /job-templates/{jobTemplateId}           DeleteJobTemplate
//
// Errors are *APIError: the HTTP status and the exception name AWS answers
// with (X-Amzn-ErrorType), and the message as {"message":"…"}.

// APIError is a control-plane error.
type APIError struct {
	Status int    // HTTP status
	Type   string // exception name, e.g. "ResourceNotFoundException"
	Msg    string `json:"message"`
	// ResourceID and ResourceArn are set on ResourceAlreadyExistsException.
	ResourceID  string `json:"resourceId,omitempty"`
	ResourceArn string `json:"resourceArn,omitempty"`
}

func (e *APIError) Error() string { return e.Type + ": " + e.Msg }

func invalidRequest(msg string) *APIError {
	return &APIError{Status: http.StatusBadRequest, Type: "InvalidRequestException", Msg: msg}
}

func notFound(msg string) *APIError {
	return &APIError{Status: http.StatusNotFound, Type: "ResourceNotFoundException", Msg: msg}
}

func alreadyExists(msg, id, arn string) *APIError {
	return &APIError{Status: http.StatusConflict, Type: "ResourceAlreadyExistsException", Msg: msg, ResourceID: id, ResourceArn: arn}
}

func invalidTransition(msg string) *APIError {
	return &APIError{Status: http.StatusConflict, Type: "InvalidStateTransitionException", Msg: msg}
}

func versionConflict(msg string) *APIError {
	return &APIError{Status: http.StatusConflict, Type: "VersionConflictException", Msg: msg}
}

func conflict(msg, id string) *APIError {
	return &APIError{Status: http.StatusConflict, Type: "ConflictException", Msg: msg, ResourceID: id}
}

// Throttled is the error of a call shed because of load.
var Throttled = &APIError{Status: http.StatusBadRequest, Type: "ThrottlingException", Msg: "Rate exceeded"}

func internalFailure(msg string) *APIError {
	return &APIError{Status: http.StatusInternalServerError, Type: "InternalFailureException", Msg: msg}
}

// Configuration shapes shared by jobs and templates.
type (
	// JobExecutionsRolloutConfig is a staged rollout.
	JobExecutionsRolloutConfig struct {
		MaximumPerMinute *int                    `json:"maximumPerMinute,omitempty"`
		ExponentialRate  *ExponentialRolloutRate `json:"exponentialRate,omitempty"`
	}
	// ExponentialRolloutRate raises the rate by a factor as criteria are met.
	ExponentialRolloutRate struct {
		BaseRatePerMinute    int                  `json:"baseRatePerMinute"`
		IncrementFactor      float64              `json:"incrementFactor"`
		RateIncreaseCriteria RateIncreaseCriteria `json:"rateIncreaseCriteria"`
	}
	// RateIncreaseCriteria says when the rate rises.
	RateIncreaseCriteria struct {
		NumberOfNotifiedThings  *int `json:"numberOfNotifiedThings,omitempty"`
		NumberOfSucceededThings *int `json:"numberOfSucceededThings,omitempty"`
	}
	// AbortConfig cancels a job when failures pass a threshold.
	AbortConfig struct {
		CriteriaList []AbortCriteria `json:"criteriaList"`
	}
	// AbortCriteria is one abort rule.
	AbortCriteria struct {
		FailureType               string  `json:"failureType"` // FAILED, REJECTED, TIMED_OUT, ALL
		Action                    string  `json:"action"`      // CANCEL
		ThresholdPercentage       float64 `json:"thresholdPercentage"`
		MinNumberOfExecutedThings int     `json:"minNumberOfExecutedThings"`
	}
	// TimeoutConfig bounds the time an execution may stay IN_PROGRESS.
	TimeoutConfig struct {
		InProgressTimeoutInMinutes *int64 `json:"inProgressTimeoutInMinutes,omitempty"`
	}
	// JobExecutionsRetryConfig retries failed or timed-out executions.
	JobExecutionsRetryConfig struct {
		CriteriaList []RetryCriteria `json:"criteriaList"`
	}
	// RetryCriteria is one retry rule.
	RetryCriteria struct {
		FailureType     string `json:"failureType"` // FAILED, TIMED_OUT, ALL
		NumberOfRetries int    `json:"numberOfRetries"`
	}
	// PresignedURLConfig is accepted and kept (no S3 here).
	PresignedURLConfig struct {
		RoleArn      string `json:"roleArn,omitempty"`
		ExpiresInSec *int64 `json:"expiresInSec,omitempty"`
	}
	// Tag is a key and value.
	Tag struct {
		Key   string `json:"Key"`
		Value string `json:"Value,omitempty"`
	}
)

// CreateJobRequest is CreateJob's body; JobID is the path's {jobId}.
type CreateJobRequest struct {
	JobID                      string                      `json:"-"`
	Targets                    []string                    `json:"targets"`
	DocumentSource             string                      `json:"documentSource,omitempty"`
	Document                   string                      `json:"document,omitempty"`
	Description                string                      `json:"description,omitempty"`
	PresignedURLConfig         *PresignedURLConfig         `json:"presignedUrlConfig,omitempty"`
	TargetSelection            string                      `json:"targetSelection,omitempty"`
	JobExecutionsRolloutConfig *JobExecutionsRolloutConfig `json:"jobExecutionsRolloutConfig,omitempty"`
	AbortConfig                *AbortConfig                `json:"abortConfig,omitempty"`
	TimeoutConfig              *TimeoutConfig              `json:"timeoutConfig,omitempty"`
	Tags                       []Tag                       `json:"tags,omitempty"`
	NamespaceID                string                      `json:"namespaceId,omitempty"`
	JobTemplateArn             string                      `json:"jobTemplateArn,omitempty"`
	JobExecutionsRetryConfig   *JobExecutionsRetryConfig   `json:"jobExecutionsRetryConfig,omitempty"`
	DocumentParameters         map[string]string           `json:"documentParameters,omitempty"`
}

// CreateJobResponse is CreateJob's answer.
type CreateJobResponse struct {
	JobArn      string `json:"jobArn"`
	JobID       string `json:"jobId"`
	Description string `json:"description,omitempty"`
}

// JobProcessDetails counts a job's things by the status of their latest
// execution.
type JobProcessDetails struct {
	ProcessingTargets        []string `json:"processingTargets,omitempty"`
	NumberOfCanceledThings   int      `json:"numberOfCanceledThings"`
	NumberOfSucceededThings  int      `json:"numberOfSucceededThings"`
	NumberOfFailedThings     int      `json:"numberOfFailedThings"`
	NumberOfRejectedThings   int      `json:"numberOfRejectedThings"`
	NumberOfQueuedThings     int      `json:"numberOfQueuedThings"`
	NumberOfInProgressThings int      `json:"numberOfInProgressThings"`
	NumberOfRemovedThings    int      `json:"numberOfRemovedThings"`
	NumberOfTimedOutThings   int      `json:"numberOfTimedOutThings"`
}

// Job is DescribeJob's job.
type Job struct {
	JobArn                     string                      `json:"jobArn"`
	JobID                      string                      `json:"jobId"`
	TargetSelection            string                      `json:"targetSelection"`
	Status                     JobStatus                   `json:"status"`
	ForceCanceled              *bool                       `json:"forceCanceled,omitempty"`
	ReasonCode                 string                      `json:"reasonCode,omitempty"`
	Comment                    string                      `json:"comment,omitempty"`
	Targets                    []string                    `json:"targets"`
	Description                string                      `json:"description,omitempty"`
	PresignedURLConfig         *PresignedURLConfig         `json:"presignedUrlConfig,omitempty"`
	JobExecutionsRolloutConfig *JobExecutionsRolloutConfig `json:"jobExecutionsRolloutConfig,omitempty"`
	AbortConfig                *AbortConfig                `json:"abortConfig,omitempty"`
	CreatedAt                  *Epoch                      `json:"createdAt,omitempty"`
	LastUpdatedAt              *Epoch                      `json:"lastUpdatedAt,omitempty"`
	CompletedAt                *Epoch                      `json:"completedAt,omitempty"`
	JobProcessDetails          *JobProcessDetails          `json:"jobProcessDetails,omitempty"`
	TimeoutConfig              *TimeoutConfig              `json:"timeoutConfig,omitempty"`
	JobTemplateArn             string                      `json:"jobTemplateArn,omitempty"`
	JobExecutionsRetryConfig   *JobExecutionsRetryConfig   `json:"jobExecutionsRetryConfig,omitempty"`
	IsConcurrent               bool                        `json:"isConcurrent"`
}

// DescribeJobResponse is DescribeJob's answer.
type DescribeJobResponse struct {
	DocumentSource string `json:"documentSource,omitempty"`
	Job            *Job   `json:"job"`
}

// ListJobsRequest is ListJobs' query.
type ListJobsRequest struct {
	Status          JobStatus `json:"-"` // ?status
	TargetSelection string    `json:"-"` // ?targetSelection
	ThingGroupName  string    `json:"-"` // ?thingGroupName
	MaxResults      int       `json:"-"` // ?maxResults
	NextToken       string    `json:"-"` // ?nextToken
}

// JobSummary is a job in ListJobs.
type JobSummary struct {
	JobArn          string    `json:"jobArn"`
	JobID           string    `json:"jobId"`
	TargetSelection string    `json:"targetSelection"`
	Status          JobStatus `json:"status"`
	CreatedAt       *Epoch    `json:"createdAt,omitempty"`
	LastUpdatedAt   *Epoch    `json:"lastUpdatedAt,omitempty"`
	CompletedAt     *Epoch    `json:"completedAt,omitempty"`
	IsConcurrent    bool      `json:"isConcurrent"`
}

// ListJobsResponse is ListJobs' answer.
type ListJobsResponse struct {
	Jobs      []JobSummary `json:"jobs"`
	NextToken string       `json:"nextToken,omitempty"`
}

// CancelJobRequest is CancelJob's body; JobID is {jobId}, Force ?force.
type CancelJobRequest struct {
	JobID      string `json:"-"`
	Force      bool   `json:"-"`
	ReasonCode string `json:"reasonCode,omitempty"`
	Comment    string `json:"comment,omitempty"`
}

// CancelJobResponse is CancelJob's answer.
type CancelJobResponse struct {
	JobArn      string `json:"jobArn"`
	JobID       string `json:"jobId"`
	Description string `json:"description,omitempty"`
}

// DeleteJobRequest is DeleteJob's path and query (no body, no answer).
type DeleteJobRequest struct {
	JobID string `json:"-"`
	Force bool   `json:"-"`
}

// GetJobDocumentResponse is GetJobDocument's answer.
type GetJobDocumentResponse struct {
	Document string `json:"document"`
}

// JobExecutionStatusDetails wraps an execution's status details.
type JobExecutionStatusDetails struct {
	DetailsMap map[string]string `json:"detailsMap,omitempty"`
}

// JobExecution is DescribeJobExecution's execution.
type JobExecution struct {
	JobID                            string                     `json:"jobId"`
	Status                           ExecStatus                 `json:"status"`
	ForceCanceled                    *bool                      `json:"forceCanceled,omitempty"`
	StatusDetails                    *JobExecutionStatusDetails `json:"statusDetails,omitempty"`
	ThingArn                         string                     `json:"thingArn"`
	QueuedAt                         *Epoch                     `json:"queuedAt,omitempty"`
	StartedAt                        *Epoch                     `json:"startedAt,omitempty"`
	LastUpdatedAt                    *Epoch                     `json:"lastUpdatedAt,omitempty"`
	ExecutionNumber                  int64                      `json:"executionNumber"`
	VersionNumber                    int64                      `json:"versionNumber"`
	ApproximateSecondsBeforeTimedOut *int64                     `json:"approximateSecondsBeforeTimedOut,omitempty"`
}

// DescribeJobExecutionRequest is DescribeJobExecution's path and query.
type DescribeJobExecutionRequest struct {
	JobID           string `json:"-"`
	ThingName       string `json:"-"`
	ExecutionNumber *int64 `json:"-"` // ?executionNumber
}

// DescribeJobExecutionResponse is DescribeJobExecution's answer.
type DescribeJobExecutionResponse struct {
	Execution *JobExecution `json:"execution"`
}

// ExecutionSummary is the control plane's JobExecutionSummary.
type ExecutionSummary struct {
	Status          ExecStatus `json:"status"`
	QueuedAt        *Epoch     `json:"queuedAt,omitempty"`
	StartedAt       *Epoch     `json:"startedAt,omitempty"`
	LastUpdatedAt   *Epoch     `json:"lastUpdatedAt,omitempty"`
	ExecutionNumber int64      `json:"executionNumber"`
	RetryAttempt    int        `json:"retryAttempt"`
}

// ListJobExecutionsRequest is the query of ListJobExecutionsForJob (JobID
// from the path) and ListJobExecutionsForThing (ThingName from the path,
// JobID from ?jobId).
type ListJobExecutionsRequest struct {
	JobID      string     `json:"-"`
	ThingName  string     `json:"-"`
	Status     ExecStatus `json:"-"`
	MaxResults int        `json:"-"`
	NextToken  string     `json:"-"`
}

// ExecutionSummaryForJob is one row of ListJobExecutionsForJob.
type ExecutionSummaryForJob struct {
	ThingArn            string           `json:"thingArn"`
	JobExecutionSummary ExecutionSummary `json:"jobExecutionSummary"`
}

// ListJobExecutionsForJobResponse is its answer.
type ListJobExecutionsForJobResponse struct {
	ExecutionSummaries []ExecutionSummaryForJob `json:"executionSummaries"`
	NextToken          string                   `json:"nextToken,omitempty"`
}

// ExecutionSummaryForThing is one row of ListJobExecutionsForThing.
type ExecutionSummaryForThing struct {
	JobID               string           `json:"jobId"`
	JobExecutionSummary ExecutionSummary `json:"jobExecutionSummary"`
}

// ListJobExecutionsForThingResponse is its answer.
type ListJobExecutionsForThingResponse struct {
	ExecutionSummaries []ExecutionSummaryForThing `json:"executionSummaries"`
	NextToken          string                     `json:"nextToken,omitempty"`
}

// CancelJobExecutionRequest is CancelJobExecution's body; JobID and
// ThingName from the path, Force from ?force.
type CancelJobExecutionRequest struct {
	JobID           string            `json:"-"`
	ThingName       string            `json:"-"`
	Force           bool              `json:"-"`
	ExpectedVersion *int64            `json:"expectedVersion,omitempty"`
	StatusDetails   map[string]string `json:"statusDetails,omitempty"`
}

// DeleteJobExecutionRequest is DeleteJobExecution's path and query.
type DeleteJobExecutionRequest struct {
	JobID           string `json:"-"`
	ThingName       string `json:"-"`
	ExecutionNumber int64  `json:"-"`
	Force           bool   `json:"-"`
}

// ThingGroupProperties describe a group.
type ThingGroupProperties struct {
	ThingGroupDescription string            `json:"thingGroupDescription,omitempty"`
	AttributePayload      *AttributePayload `json:"attributePayload,omitempty"`
}

// AttributePayload holds a group's attributes.
type AttributePayload struct {
	Attributes map[string]string `json:"attributes,omitempty"`
	Merge      bool              `json:"merge,omitempty"`
}

// CreateThingGroupRequest is CreateThingGroup's body; the name is the path's.
type CreateThingGroupRequest struct {
	ThingGroupName       string                `json:"-"`
	ParentGroupName      string                `json:"parentGroupName,omitempty"`
	ThingGroupProperties *ThingGroupProperties `json:"thingGroupProperties,omitempty"`
	Tags                 []Tag                 `json:"tags,omitempty"`
}

// CreateThingGroupResponse is its answer.
type CreateThingGroupResponse struct {
	ThingGroupName string `json:"thingGroupName"`
	ThingGroupArn  string `json:"thingGroupArn"`
	ThingGroupID   string `json:"thingGroupId"`
}

// GroupNameAndArn names a group.
type GroupNameAndArn struct {
	GroupName string `json:"groupName"`
	GroupArn  string `json:"groupArn"`
}

// ThingGroupMetadata is a group's parentage and creation date.
type ThingGroupMetadata struct {
	ParentGroupName         string            `json:"parentGroupName,omitempty"`
	RootToParentThingGroups []GroupNameAndArn `json:"rootToParentThingGroups,omitempty"`
	CreationDate            *Epoch            `json:"creationDate,omitempty"`
}

// DescribeThingGroupResponse is DescribeThingGroup's answer.
type DescribeThingGroupResponse struct {
	ThingGroupName       string                `json:"thingGroupName"`
	ThingGroupID         string                `json:"thingGroupId"`
	ThingGroupArn        string                `json:"thingGroupArn"`
	Version              int64                 `json:"version"`
	ThingGroupProperties *ThingGroupProperties `json:"thingGroupProperties,omitempty"`
	ThingGroupMetadata   *ThingGroupMetadata   `json:"thingGroupMetadata,omitempty"`
}

// DeleteThingGroupRequest is DeleteThingGroup's path and query.
type DeleteThingGroupRequest struct {
	ThingGroupName  string `json:"-"`
	ExpectedVersion *int64 `json:"-"`
}

// ThingGroupMembershipRequest is the body of AddThingToThingGroup and
// RemoveThingFromThingGroup: a group and a thing, each by name or ARN.
type ThingGroupMembershipRequest struct {
	ThingGroupName        string `json:"thingGroupName,omitempty"`
	ThingGroupArn         string `json:"thingGroupArn,omitempty"`
	ThingName             string `json:"thingName,omitempty"`
	ThingArn              string `json:"thingArn,omitempty"`
	OverrideDynamicGroups bool   `json:"overrideDynamicGroups,omitempty"`
}

// ListRequest is the paging query of the list operations that have nothing
// else (ListThingGroups adds NamePrefixFilter; ListThingsInThingGroup the
// path's group).
type ListRequest struct {
	Name             string `json:"-"`
	NamePrefixFilter string `json:"-"`
	MaxResults       int    `json:"-"`
	NextToken        string `json:"-"`
}

// ListThingGroupsResponse is ListThingGroups' answer.
type ListThingGroupsResponse struct {
	ThingGroups []GroupNameAndArn `json:"thingGroups"`
	NextToken   string            `json:"nextToken,omitempty"`
}

// ListThingsInThingGroupResponse is ListThingsInThingGroup's answer.
type ListThingsInThingGroupResponse struct {
	Things    []string `json:"things"`
	NextToken string   `json:"nextToken,omitempty"`
}

// CreateJobTemplateRequest is CreateJobTemplate's body; the id is the path's.
type CreateJobTemplateRequest struct {
	JobTemplateID              string                      `json:"-"`
	JobArn                     string                      `json:"jobArn,omitempty"`
	DocumentSource             string                      `json:"documentSource,omitempty"`
	Document                   string                      `json:"document,omitempty"`
	Description                string                      `json:"description"`
	PresignedURLConfig         *PresignedURLConfig         `json:"presignedUrlConfig,omitempty"`
	JobExecutionsRolloutConfig *JobExecutionsRolloutConfig `json:"jobExecutionsRolloutConfig,omitempty"`
	AbortConfig                *AbortConfig                `json:"abortConfig,omitempty"`
	TimeoutConfig              *TimeoutConfig              `json:"timeoutConfig,omitempty"`
	Tags                       []Tag                       `json:"tags,omitempty"`
	JobExecutionsRetryConfig   *JobExecutionsRetryConfig   `json:"jobExecutionsRetryConfig,omitempty"`
}

// CreateJobTemplateResponse is its answer.
type CreateJobTemplateResponse struct {
	JobTemplateArn string `json:"jobTemplateArn"`
	JobTemplateID  string `json:"jobTemplateId"`
}

// DescribeJobTemplateResponse is DescribeJobTemplate's answer.
type DescribeJobTemplateResponse struct {
	JobTemplateArn             string                      `json:"jobTemplateArn"`
	JobTemplateID              string                      `json:"jobTemplateId"`
	Description                string                      `json:"description,omitempty"`
	DocumentSource             string                      `json:"documentSource,omitempty"`
	Document                   string                      `json:"document,omitempty"`
	CreatedAt                  *Epoch                      `json:"createdAt,omitempty"`
	PresignedURLConfig         *PresignedURLConfig         `json:"presignedUrlConfig,omitempty"`
	JobExecutionsRolloutConfig *JobExecutionsRolloutConfig `json:"jobExecutionsRolloutConfig,omitempty"`
	AbortConfig                *AbortConfig                `json:"abortConfig,omitempty"`
	TimeoutConfig              *TimeoutConfig              `json:"timeoutConfig,omitempty"`
	JobExecutionsRetryConfig   *JobExecutionsRetryConfig   `json:"jobExecutionsRetryConfig,omitempty"`
}

// JobTemplateSummary is a template in ListJobTemplates.
type JobTemplateSummary struct {
	JobTemplateArn string `json:"jobTemplateArn"`
	JobTemplateID  string `json:"jobTemplateId"`
	Description    string `json:"description,omitempty"`
	CreatedAt      *Epoch `json:"createdAt,omitempty"`
}

// ListJobTemplatesResponse is ListJobTemplates' answer.
type ListJobTemplatesResponse struct {
	JobTemplates []JobTemplateSummary `json:"jobTemplates"`
	NextToken    string               `json:"nextToken,omitempty"`
}
