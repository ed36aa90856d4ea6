#!/usr/bin/env bash
# What the Bicep templates cannot do, after `azd up`: grants the Function App's user-assigned
# managed identity the Microsoft Graph application roles its configured channels need (and no
# others), the Sites.Selected grant on the one SharePoint site (read; write when the insights
# page is published there, REMINDERS_REPORT_SHAREPOINT_FOLDER), uploads the Teams app to the
# org catalog, and prints the Exchange Online commands that scope e-mail to the sender mailbox.
# Idempotent: every grant is looked up first and only made when missing.
#
# Usage: scripts/grant-permissions.sh [--dry-run] [options]
#   --dry-run               print every call instead of making it (no network, no argument needed)
#   --principal-id ID       the identity's service principal object id  (azd: MANAGED_IDENTITY_PRINCIPAL_ID)
#   --client-id ID          the identity's client id                     (azd: MANAGED_IDENTITY_CLIENT_ID)
#   --channels LIST         e.g. teams_bot,email                         (azd: REMINDERS_CHANNEL)
#   --source blob|sharepoint                                             (azd: REMINDERS_SOURCE)
#   --site-url URL          SharePoint site of the export                (azd: REMINDERS_SHAREPOINT_SITE_URL)
#   --report-folder PATH    folder the insights page is published to: the site grant becomes write
#                                                                        (azd: REMINDERS_REPORT_SHAREPOINT_FOLDER)
#   --sender MAILBOX        shared mailbox sending the e-mails           (azd: REMINDERS_SENDER_MAILBOX)
#   --resource-group RG / --app NAME   the Function App                  (azd: AZURE_RESOURCE_GROUP / AZURE_FUNCTION_APP_NAME)
#   --developer-name, --website-url, --privacy-url, --terms-url          Teams app manifest fields
#                                                                        (azd: TEAMS_DEVELOPER_NAME, TEAMS_WEBSITE_URL, ...)
# Values not given as flags are read from `azd env get-values` when azd is installed.
# Run as a Privileged Role Administrator (Graph roles), with SharePoint admin rights for the
# site grant and Teams admin rights for the upload (AppCatalog.ReadWrite.All, delegated).
set -euo pipefail
cd "$(dirname "$0")/.."

GRAPH_APP_ID=00000003-0000-0000-c000-000000000000   # Microsoft Graph's well-known app id
GRAPH=https://graph.microsoft.com/v1.0

dry_run=false
declare -A cfg=()
flag_to_key() {
  case "$1" in
    --principal-id) echo MANAGED_IDENTITY_PRINCIPAL_ID ;;
    --client-id) echo MANAGED_IDENTITY_CLIENT_ID ;;
    --channels) echo REMINDERS_CHANNEL ;;
    --source) echo REMINDERS_SOURCE ;;
    --site-url) echo REMINDERS_SHAREPOINT_SITE_URL ;;
    --report-folder) echo REMINDERS_REPORT_SHAREPOINT_FOLDER ;;
    --sender) echo REMINDERS_SENDER_MAILBOX ;;
    --resource-group) echo AZURE_RESOURCE_GROUP ;;
    --app) echo AZURE_FUNCTION_APP_NAME ;;
    --developer-name) echo TEAMS_DEVELOPER_NAME ;;
    --website-url) echo TEAMS_WEBSITE_URL ;;
    --privacy-url) echo TEAMS_PRIVACY_URL ;;
    --terms-url) echo TEAMS_TERMS_URL ;;
    *) return 1 ;;
  esac
}
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=true; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *)
      key=$(flag_to_key "$1") || { echo "grant-permissions.sh: unknown argument '$1' (see --help)" >&2; exit 2; }
      [ $# -ge 2 ] || { echo "grant-permissions.sh: $1 needs a value" >&2; exit 2; }
      cfg[$key]="$2"; shift 2 ;;
  esac
done

# The azd environment fills what the flags did not (never in a dry run: it needs no tool).
if ! $dry_run && command -v azd >/dev/null 2>&1; then
  while IFS='=' read -r key value; do
    value="${value#\"}"; value="${value%\"}"
    [ -n "$key" ] && [ -z "${cfg[$key]:-}" ] && cfg[$key]="$value"
  done < <(azd env get-values 2>/dev/null || true)
fi
get() { local v="${cfg[$1]:-}"; if [ -n "$v" ]; then echo "$v"; elif $dry_run; then echo "${2:-<$1>}"; else echo ""; fi; }

principal=$(get MANAGED_IDENTITY_PRINCIPAL_ID)
client_id=$(get MANAGED_IDENTITY_CLIENT_ID)
channels=$(get REMINDERS_CHANNEL teams_bot,email)
source_kind=$(get REMINDERS_SOURCE sharepoint)
site_url=$(get REMINDERS_SHAREPOINT_SITE_URL 'https://<tenant>.sharepoint.com/sites/<site>')
sender="${cfg[REMINDERS_SENDER_MAILBOX]:-}"
# Publishing the insights page uploads to the site's library: write instead of read.
site_role="read"; [ -n "${cfg[REMINDERS_REPORT_SHAREPOINT_FOLDER]:-}" ] && site_role="write"
for required in principal client_id channels; do
  [ -n "${!required}" ] || { echo "grant-permissions.sh: no $required: pass it as a flag or run after azd up (azd env get-values)" >&2; exit 2; }
done

has_channel() { case ",${channels// /}," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
say() { printf '%s\n' "$*"; }
# Runs a command, or prints it in a dry run (arguments quoted as a shell would need them; on
# stderr, so that it shows even where the command's own output is discarded).
run() {
  if $dry_run; then { printf '[dry-run]'; printf ' %q' "$@"; printf '\n'; } >&2; else "$@"; fi
}
# A read-only query: its output in a real run, a placeholder in a dry run.
query() {
  local placeholder="$1"; shift
  if $dry_run; then { printf '[dry-run]'; printf ' %q' "$@"; printf '\n'; } >&2; echo "$placeholder"
  else "$@"; fi
}
todo=()
done_word=granted; if $dry_run; then done_word="would be granted"; fi

# ---- Graph application roles: only what the channels and source need ------------------------
roles=()
if has_channel teams_bot; then
  roles+=(User.Read.All TeamsAppInstallation.ReadWriteSelfForUser.All)
elif has_channel email; then
  roles+=(User.Read.All)   # owner lookup, preferredLanguage, manager
fi
[ "$source_kind" = sharepoint ] && roles+=(Sites.Selected)

say "== Graph application roles for the identity ($principal): ${roles[*]:-none}"
if [ ${#roles[@]} -gt 0 ]; then
  graph_sp=$(query "<graph-service-principal-id>" az ad sp show --id "$GRAPH_APP_ID" --query id -o tsv)
  existing=$(query "" az rest --method get \
    --uri "$GRAPH/servicePrincipals/$principal/appRoleAssignments" --query "value[].appRoleId" -o tsv)
  for role in "${roles[@]}"; do
    role_id=$(query "<appRoleId of $role>" az ad sp show --id "$GRAPH_APP_ID" \
      --query "appRoles[?value=='$role' && contains(allowedMemberTypes, 'Application')].id | [0]" -o tsv)
    if [ -n "$existing" ] && grep -qx "$role_id" <<<"$existing"; then
      say "   $role: already granted"
      continue
    fi
    run az rest --method post --uri "$GRAPH/servicePrincipals/$principal/appRoleAssignments" \
      --headers "Content-Type=application/json" \
      --body "{\"principalId\":\"$principal\",\"resourceId\":\"$graph_sp\",\"appRoleId\":\"$role_id\"}" >/dev/null
    say "   $role: $done_word"
  done
fi

# ---- Sites.Selected: read (or write, to publish the page) on the one site ----------------------
if [ "$source_kind" = sharepoint ]; then
  [ -n "$site_url" ] || { echo "grant-permissions.sh: --site-url (REMINDERS_SHAREPOINT_SITE_URL) is required for the SharePoint source" >&2; exit 2; }
  host=$(sed -E 's#^https://([^/]+).*#\1#' <<<"$site_url")
  path=$(sed -E 's#^https://[^/]+(/[^?]*)?.*#\1#' <<<"$site_url"); path="${path%/}"
  say "== Sites.Selected $site_role grant on $site_url"
  site_id=$(query "<site-id>" az rest --method get --uri "$GRAPH/sites/$host:$path" --query id -o tsv)
  granted=$(query "" az rest --method get --uri "$GRAPH/sites/$site_id/permissions" \
    --query "value[?grantedToIdentitiesV2[?application.id=='$client_id']].id | [0]" -o tsv)
  if [ -n "$granted" ]; then
    roles_now=$(query "" az rest --method get --uri "$GRAPH/sites/$site_id/permissions/$granted" --query "roles" -o tsv)
    if [ "$site_role" = write ] && ! grep -qwE 'write|fullcontrol' <<<"$roles_now"; then
      # An earlier read grant: raised to write (PATCH of the permission's roles).
      run az rest --method patch --uri "$GRAPH/sites/$site_id/permissions/$granted" \
        --headers "Content-Type=application/json" --body '{"roles":["write"]}' >/dev/null
      say "   write $done_word (was: $roles_now)"
    else
      say "   already granted ($granted)"
    fi
  else
    run az rest --method post --uri "$GRAPH/sites/$site_id/permissions" \
      --headers "Content-Type=application/json" \
      --body "{\"roles\":[\"$site_role\"],\"grantedToIdentities\":[{\"application\":{\"id\":\"$client_id\",\"displayName\":\"lookout-reminders\"}}]}" >/dev/null
    say "   $site_role $done_word"
  fi
fi

# ---- Teams app in the org catalog ----------------------------------------------------------
if has_channel teams_bot; then
  say "== Teams app (bot $client_id) in the org catalog"
  external_id="${cfg[TEAMS_APP_EXTERNAL_ID]:-}"
  if [ -z "$external_id" ]; then
    if $dry_run; then external_id='<new GUID>'; else external_id=$(python3 -c 'import uuid; print(uuid.uuid4())'); fi
    run azd env set TEAMS_APP_EXTERNAL_ID "$external_id"   # the manifest id, kept for updates
  fi
  catalog_id=$(query "" az rest --method get \
    --uri "$GRAPH/appCatalogs/teamsApps?\$filter=externalId eq '$external_id'" --query "value[0].id" -o tsv)
  if [ -n "$catalog_id" ]; then
    say "   already in the catalog ($catalog_id)"
  else
    zip_path=target/teams-app/reminders-teams-app.zip
    run python3 - "$external_id" "$client_id" "$(get TEAMS_DEVELOPER_NAME)" "$(get TEAMS_WEBSITE_URL)" \
      "$(get TEAMS_PRIVACY_URL)" "$(get TEAMS_TERMS_URL)" "$zip_path" <<'PY'
import sys, zipfile, pathlib
app_id, bot_id, developer, website, privacy, terms, dest = sys.argv[1:8]
for name, value in [("developer name", developer), ("website url", website), ("privacy url", privacy), ("terms url", terms)]:
    if not value:
        sys.exit(f"grant-permissions.sh: the Teams app needs its {name} (--{name.replace(' ', '-')} or azd env TEAMS_...)")
manifest = pathlib.Path("teams-app/manifest.json").read_text(encoding="utf-8")
for key, value in {"APP_ID": app_id, "BOT_APP_ID": bot_id, "DEVELOPER_NAME": developer,
                   "WEBSITE_URL": website, "PRIVACY_URL": privacy, "TERMS_URL": terms}.items():
    manifest = manifest.replace("{{" + key + "}}", value)
if "{{" in manifest:
    sys.exit("grant-permissions.sh: teams-app/manifest.json has a placeholder this script does not fill")
pathlib.Path(dest).parent.mkdir(parents=True, exist_ok=True)
with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("manifest.json", manifest)
    for name in ("color.png", "outline.png", "fr-fr.json"):
        z.write(f"teams-app/{name}", name)
PY
    if $dry_run; then
      say "[dry-run] curl -X POST $GRAPH/appCatalogs/teamsApps -H 'Authorization: Bearer <token of az account get-access-token --resource-type ms-graph>' -H 'Content-Type: application/zip' --data-binary @$zip_path" >&2
      catalog_id="<catalog id>"
    else
      token=$(az account get-access-token --resource-type ms-graph --query accessToken -o tsv)
      catalog_id=$(curl --fail --silent --show-error -X POST "$GRAPH/appCatalogs/teamsApps" \
        -H "Authorization: Bearer $token" -H "Content-Type: application/zip" \
        --data-binary "@$zip_path" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
      unset token
    fi
    say "   $(if $dry_run; then echo 'would be uploaded'; else echo uploaded; fi) ($catalog_id)"
  fi
  run azd env set REMINDERS_TEAMS_APP_ID "$catalog_id"   # kept by the next azd provision
  run az functionapp config appsettings set -g "$(get AZURE_RESOURCE_GROUP)" -n "$(get AZURE_FUNCTION_APP_NAME)" \
    --settings "REMINDERS_TEAMS_APP_ID=$catalog_id" >/dev/null
  todo+=("Teams admin center > Teams apps > Manage apps: check that the app is Allowed and available to the people who get reminders.")
fi

# ---- E-mail: Exchange RBAC for Applications, scoped to the sender mailbox -------------------
if has_channel email || [ -n "$sender" ]; then
  mailbox="${sender:-<sender mailbox>}"
  todo+=("Exchange Online PowerShell (Connect-ExchangeOnline as an Exchange administrator), to let the identity send only as $mailbox:
    New-ServicePrincipal -AppId $client_id -ObjectId $principal -DisplayName 'lookout-reminders'
    New-ManagementScope -Name 'lookout-reminders sender' -RecipientRestrictionFilter \"PrimarySmtpAddress -eq '$mailbox'\"
    New-ManagementRoleAssignment -App $client_id -Role 'Application Mail.Send' -CustomResourceScope 'lookout-reminders sender'
    Test-ServicePrincipalAuthorization -Identity $client_id -Resource $mailbox   # InScope: True
  (Do not grant Graph Mail.Send as well: it is tenant-wide.)")
fi

say ""
say "Done$(if $dry_run; then echo ' (dry run: nothing was changed)'; fi). Still to be done by a person:"
if [ ${#todo[@]} -eq 0 ]; then say "  nothing"; fi
for item in "${todo[@]}"; do say "  - $item"; done
say "  - Tokens are cached up to 24 h: restart the Function App (az functionapp restart) if a run already failed with 403."
