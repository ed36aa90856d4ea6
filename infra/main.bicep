// lookout-reminders: the whole deployment, for `azd up` (subscription scope: creates the
// resource group, then everything in it through resources.bicep). Without azd:
// `az deployment sub create -l <region> -f infra/main.bicep -p environmentName=<name> ...`,
// or `az deployment group create -g <rg> -f infra/resources.bicep ...` into an existing group.
// Stays within the Bicep subset that checkov's parser (pycep-parser) reads: no `string?`,
// `import`, spread, user functions or lambdas. `bash scripts/test.sh` checks it.
targetScope = 'subscription'

@minLength(1)
@maxLength(40)
@description('azd environment name: names the resource group and seeds the unique resource names.')
param environmentName string

@minLength(1)
@description('Region of every resource (the Azure Bot is global). Flex Consumption exists in a subset of regions: `az functionapp list-flexconsumption-locations`.')
param location string

@description('Hosting plan: FlexConsumption (default; Linux, scale to zero, custom handlers supported) or Premium (EP1, Linux, always warm). Linux Consumption (Y1) is not offered: it retires on 30 September 2028 and needs a key-based content share.')
@allowed([
  'FlexConsumption'
  'Premium'
])
param hostingPlan string = 'FlexConsumption'

@description('Primary channel then fallbacks, comma-separated: teams_bot, workflows, email (e.g. teams_bot,email). Decides which optional parts are created.')
param channels string

@description('Where the export comes from: blob (the exports container created here) or sharepoint (a Teams / SharePoint library, through Graph Sites.Selected).')
@allowed([
  'blob'
  'sharepoint'
])
param source string = 'blob'

@description('Timer schedule, six-field NCRONTAB (sec min hour day month weekday). UTC on Flex Consumption; in timeZone on Premium.')
param reminderSchedule string = '0 */20 7-8 * * 1-5'

@description('IANA time zone for "today", deadlines and dates shown to people.')
param timeZone string = 'Europe/Paris'

@description('Mail domains that may be messaged, comma-separated (e.g. contoso.com). Empty = all, with a warning.')
param allowedDomains string = ''

@description('Default message language (fr or en).')
param language string = 'fr'

@description('Help-desk address shown in the message. Empty = the built-in one.')
param contactEmail string = ''

@description('Signature of the message. Empty = the built-in one.')
param signature string = ''

@description('A run that would message more owners is refused unless forced.')
param maxOwnersPerRun int = 2000

@description('Blob source: the exact export blob in the exports container. Empty = the newest blob under exportPrefix.')
param exportBlob string = ''

@description('Blob source: prefix under which the newest blob is the export (used when exportBlob is empty).')
param exportPrefix string = 'lookout/'

@description('SharePoint source: the site URL, e.g. https://contoso.sharepoint.com/sites/Mobility.')
param sharePointSiteUrl string = ''

@description('SharePoint source: document library name. Empty = the site default library.')
param sharePointLibrary string = ''

@description('SharePoint source: path of the export in the library, e.g. General/issues-export.xlsx.')
param sharePointFilePath string = ''

@description('SharePoint source: folder of the same library the insights page is published to after each live run (e.g. General/Power Automate/reports); its webUrl becomes the digest link. Empty = not published. Needs the Sites.Selected write grant (scripts/grant-permissions.sh --report-folder).')
param reportSharePointFolder string = ''

@description('Teams bot: catalog id of the Teams app. Empty on the first `azd up`; scripts/grant-permissions.sh uploads the app and stores the id in the azd environment (REMINDERS_TEAMS_APP_ID).')
param teamsAppId string = ''

@description('E-mail: the shared mailbox that sends the reminders (required when channels include email; also used for manager copies).')
param senderMailbox string = ''

@secure()
@description('Workflows channel: the Teams Workflows webhook URL (stored in Key Vault).')
param workflowsUrl string = ''

@secure()
@description('Security-team digest: the Workflows webhook URL posting the digest (stored in Key Vault). Empty = no digest.')
param digestWebhookUrl string = ''

@description('Copy escalated reminders to the owner manager.')
param escalateToManager bool = false

var tags = {
  'azd-env-name': environmentName
}

resource resourceGroup 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module resources 'resources.bicep' = {
  name: 'lookout-reminders'
  scope: resourceGroup
  params: {
    environmentName: environmentName
    location: location
    tags: tags
    hostingPlan: hostingPlan
    channels: channels
    source: source
    reminderSchedule: reminderSchedule
    timeZone: timeZone
    allowedDomains: allowedDomains
    language: language
    contactEmail: contactEmail
    signature: signature
    maxOwnersPerRun: maxOwnersPerRun
    exportBlob: exportBlob
    exportPrefix: exportPrefix
    sharePointSiteUrl: sharePointSiteUrl
    sharePointLibrary: sharePointLibrary
    sharePointFilePath: sharePointFilePath
    reportSharePointFolder: reportSharePointFolder
    teamsAppId: teamsAppId
    senderMailbox: senderMailbox
    workflowsUrl: workflowsUrl
    digestWebhookUrl: digestWebhookUrl
    escalateToManager: escalateToManager
  }
}

// Read by azd (azd env get-values) and by scripts/grant-permissions.sh.
output AZURE_RESOURCE_GROUP string = resourceGroup.name
output AZURE_FUNCTION_APP_NAME string = resources.outputs.functionAppName
output AZURE_FUNCTION_APP_HOSTNAME string = resources.outputs.functionAppHostName
output MANAGED_IDENTITY_CLIENT_ID string = resources.outputs.identityClientId
output MANAGED_IDENTITY_PRINCIPAL_ID string = resources.outputs.identityPrincipalId
output AZURE_STORAGE_ACCOUNT_NAME string = resources.outputs.storageAccountName
output EXPORTS_CONTAINER string = resources.outputs.exportsContainer
output REMINDERS_CHANNEL string = channels
output REMINDERS_SOURCE string = source
output REMINDERS_SHAREPOINT_SITE_URL string = sharePointSiteUrl
output REMINDERS_SENDER_MAILBOX string = senderMailbox
output AZURE_BOT_NAME string = resources.outputs.botName
