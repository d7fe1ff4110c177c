// Renders an Ollama TEMPLATE with Go's own text/template, the way Ollama executes it for chat:
// data {System, Messages[{Role, Content, Images}]} and missingkey=zero. Input JSON on stdin:
// {"template": "...", "system": "...", "messages": [{"role": "...", "content": "...", "images": [...]}]}
package main

import (
	"encoding/json"
	"os"
	"text/template"
)

type message struct {
	Role    string   `json:"role"`
	Content string   `json:"content"`
	Images  []string `json:"images"`
}

type request struct {
	Template string     `json:"template"`
	System   string     `json:"system"`
	Messages []*message `json:"messages"`
}

func main() {
	var req request
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		panic(err)
	}
	tmpl := template.Must(template.New("").Option("missingkey=zero").Parse(req.Template))
	data := map[string]any{"System": req.System, "Messages": req.Messages, "Response": ""}
	if err := tmpl.Execute(os.Stdout, data); err != nil {
		panic(err)
	}
}
