package ctl

import (
	"context"
	"flag"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"

	"github.com/shadowgate/shadowgate/agent/localapi"
)

// Shell completion: the scripts are small and ask shadowctl itself
// (`shadowctl __complete WORD...`, the words typed so far, the last one
// being completed) so that commands, flags and their help are the ones the
// command table defines. Each answer line is a candidate, "word<TAB>what it
// is"; a line ":files" asks the shell for file names.

// completeCommand is the hidden command the completion scripts call.
const completeCommand = "__complete"

const filesDirective = ":files"

func runCompletion(e *env, args []string) error {
	fs := flag.NewFlagSet("completion", flag.ContinueOnError)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("takes one SHELL: bash or zsh")
	}
	switch pos[0] {
	case "bash":
		fmt.Fprint(e.stdout, bashCompletion)
	case "zsh":
		fmt.Fprint(e.stdout, zshCompletion)
	default:
		return usagef("no completion for %q: bash or zsh", pos[0])
	}
	return nil
}

const bashCompletion = `# bash completion for shadowctl (shadowctl completion bash).
_shadowctl() {
	local line files=0
	COMPREPLY=()
	while IFS= read -r line; do
		if [[ $line == :files ]]; then files=1; continue; fi
		COMPREPLY+=("${line%%$'\t'*}")
	done < <("${COMP_WORDS[0]}" __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null)
	if (( files )); then
		compopt -o default 2>/dev/null
	fi
	return 0
}
complete -F _shadowctl shadowctl
`

const zshCompletion = `#compdef shadowctl
# zsh completion for shadowctl (shadowctl completion zsh).
_shadowctl() {
	local -a lines cands
	local line word desc files=0
	lines=("${(@f)$("${words[1]}" __complete "${(@)words[2,CURRENT]}" 2>/dev/null)}")
	for line in $lines; do
		[[ -z $line ]] && continue
		if [[ $line == :files ]]; then files=1; continue; fi
		word=${line%%$'\t'*}
		desc=${line#*$'\t'}
		[[ $desc == $line ]] && desc=""
		cands+=("${word//:/\\:}${desc:+:$desc}")
	done
	(( ${#cands} )) && _describe -t shadowctl 'shadowctl' cands
	(( files )) && _files
	return 0
}
if [[ "${funcstack[1]}" == _shadowctl ]]; then
	_shadowctl "$@"
else
	compdef _shadowctl shadowctl
fi
`

// fileFlags take a file name.
var fileFlags = map[string]bool{"socket": true, "config": true, "ca": true, "cert": true, "key": true, "password-file": true, "file": true, "things": true, "document": true}

func runComplete(e *env, cmds []cliCommand, words []string) int {
	for _, c := range complete(e.ctx, cmds, words) {
		fmt.Fprintln(e.stdout, c)
	}
	return ExitOK
}

// complete answers the completion of the last of words.
func complete(ctx context.Context, cmds []cliCommand, words []string) []string {
	if len(words) == 0 {
		words = []string{""}
	}
	cur, prev := words[len(words)-1], words[:len(words)-1]
	fs := globalFlagSet() // every flag known so far, to skip their values
	offer := fs           // the flags to offer: the command's once it is known
	var typed []string    // command words
	var cmd *cliCommand
	var args []string           // the command's positional arguments
	vals := map[string]string{} // the flags given, for the daemon's socket
	dashes := false
	for i := 0; i < len(prev); i++ {
		w := prev[i]
		switch {
		case w == "--" && !dashes:
			dashes = true
			continue
		case strings.HasPrefix(w, "-") && len(w) > 1 && !dashes:
			name, v, hasValue := strings.Cut(strings.TrimLeft(w, "-"), "=")
			if f := fs.Lookup(name); f != nil && !hasValue && !isBoolFlag(f) && i+1 < len(prev) {
				i++ // its value
				v = prev[i]
			}
			vals[name] = v
			continue
		}
		if cmd != nil {
			args = append(args, w)
			continue
		}
		typed = append(typed, w)
		if c, n := match(cmds, typed); c != nil && n == len(typed) {
			cmd = c
			offer = flag.NewFlagSet(c.name, flag.ContinueOnError)
			if cfs := describe(c); cfs != nil {
				cfs.VisitAll(func(f *flag.Flag) {
					offer.Var(f.Value, f.Name, f.Usage)
					if fs.Lookup(f.Name) == nil {
						fs.Var(f.Value, f.Name, f.Usage)
					}
				})
			}
			offer.Var(fs.Lookup("help").Value, "help", fs.Lookup("help").Usage)
		}
	}
	// The value of a flag?
	if len(prev) > 0 && !dashes {
		last := prev[len(prev)-1]
		if name, _, hasValue := strings.Cut(strings.TrimLeft(last, "-"), "="); strings.HasPrefix(last, "-") && !hasValue {
			if f := fs.Lookup(name); f != nil && !isBoolFlag(f) {
				if fileFlags[name] {
					return []string{filesDirective}
				}
				return nil
			}
		}
	}
	if strings.HasPrefix(cur, "-") && !dashes {
		var out []string
		offer.VisitAll(func(f *flag.Flag) {
			if n := flagName(f.Name); strings.HasPrefix(n, cur) {
				_, usage := flag.UnquoteUsage(f)
				out = append(out, n+"\t"+oneLine(usage))
			}
		})
		return out
	}
	if cmd == nil {
		return nextWords(cmds, typed, cur)
	}
	return completeArgs(ctx, cmds, cmd, vals, args, cur)
}

func isBoolFlag(f *flag.Flag) bool {
	bf, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && bf.IsBoolFlag()
}

// oneLine cuts a usage text at its first parenthesis or line end, for a
// menu.
func oneLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if i := strings.Index(s, " ("); i > 0 {
		s = s[:i]
	}
	return s
}

// nextWords are the words that may follow typed on the way to a command.
func nextWords(cmds []cliCommand, typed []string, cur string) []string {
	seen := map[string]bool{}
	var out []string
	for _, c := range cmds {
		words := strings.Fields(c.name)
		if len(words) <= len(typed) || strings.Join(words[:len(typed)], " ") != strings.Join(typed, " ") {
			continue
		}
		w := words[len(typed)]
		if !strings.HasPrefix(w, cur) || seen[w] {
			continue
		}
		seen[w] = true
		desc := c.summary
		if len(words) > len(typed)+1 {
			var subs []string
			for _, s := range subcommands(cmds, strings.Join(words[:len(typed)+1], " ")) {
				subs = append(subs, strings.Fields(s.name)[len(typed)+1])
			}
			desc = strings.Join(subs, ", ")
		}
		out = append(out, w+"\t"+desc)
	}
	sort.Strings(out)
	return out
}

// completeArgs completes a command's positional arguments: command names
// for help, shells for completion, files where the usage says FILE, and
// the daemon's actuators where it says ACTUATOR.
func completeArgs(ctx context.Context, cmds []cliCommand, cmd *cliCommand, vals map[string]string, args []string, cur string) []string {
	switch cmd.name {
	case "help":
		return nextWords(cmds, args, cur)
	case "completion":
		if len(args) == 0 {
			return filterPrefix([]string{"bash\tbash completion script", "zsh\tzsh completion script"}, cur)
		}
		return nil
	}
	usage := strings.Fields(usageLine(cmd))
	words := strings.Fields(cmd.name)
	var want []string // the argument names of the usage line, up to its first flag
	for _, u := range usage[1+len(words):] {
		u = strings.Trim(u, "[].")
		if u == "" || strings.ToUpper(u) != u || strings.HasPrefix(u, "-") {
			break
		}
		want = append(want, u)
	}
	if len(args) >= len(want) {
		return nil
	}
	switch {
	case strings.Contains(want[len(args)], "FILE"):
		return []string{filesDirective}
	case want[len(args)] == "ACTUATOR":
		return filterPrefix(actuatorNames(ctx, vals), cur)
	case want[len(args)] == "JOBID" && cmd.name != "job create":
		return filterPrefix(jobIDs(ctx, vals), cur)
	}
	return nil
}

func filterPrefix(cands []string, cur string) []string {
	var out []string
	for _, c := range cands {
		if strings.HasPrefix(c, cur) {
			out = append(out, c)
		}
	}
	return out
}

// actuatorNames asks the daemon, briefly, for its actuators.
func actuatorNames(ctx context.Context, vals map[string]string) []string {
	f := localFlags{socket: vals["socket"], configFile: vals["config"]}
	t, _, err := f.target()
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	var acts []localapi.ActuatorView
	if newAPIClient(t, nil).call(ctx, "GET", "/v1/actuators", nil, &acts) != nil {
		return nil
	}
	var out []string
	for _, a := range acts {
		out = append(out, a.Name+"\t"+a.Driver+" "+compact(a.State))
	}
	return out
}

// jobIDs asks the jobs API, briefly, for its newest jobs.
func jobIDs(ctx context.Context, vals map[string]string) []string {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	f := iotFlags{endpoint: vals["endpoint-url"], region: vals["region"], profile: vals["profile"]}
	c, err := f.client(ctx)
	if err != nil {
		return nil
	}
	out, err := c.api.ListJobs(ctx, &iot.ListJobsInput{MaxResults: aws.Int32(100)})
	if err != nil {
		return nil
	}
	var ids []string
	for _, j := range out.Jobs {
		ids = append(ids, aws.ToString(j.JobId)+"\t"+string(j.Status))
	}
	return ids
}
